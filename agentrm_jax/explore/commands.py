"""`agentrm explore`, `agentrm samples` and `agentrm tree show`: `register(subparsers)` adds them.

    agentrm explore --env maze --seeds 0-99 --policy expert --noise 0.3 --simulations 16 --k 4 --rollouts 2
                    --out trees.jsonl [--workers 2 [--ray [ADDRESS]]] [--config configs/explore_cpu.yaml]
    agentrm samples --trees trees.jsonl --out regression.jsonl [--min-visits 2] [--balance] [--pairs pairs.jsonl]
    agentrm tree show trees.jsonl --seed 3 [--html tree.html]
    agentrm tree stats trees.jsonl [more.jsonl ...] [--json]

The top level imports the standard library only, so `agentrm --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]

# flag -> config key, for `agentrm explore`
_FLAGS = {"env": "env", "split": "split", "seeds": "seeds", "policy": "policy", "noise": "noise",
          "policy_seed": "policy_seed", "max_new_tokens": "max_new_tokens", "kv_cache_mb": "kv_cache_mb",
          "concurrency": "concurrency", "drop_tokens": "drop_tokens", "simulations": "simulations", "k": "k",
          "rollouts": "rollouts", "temperature": "temperature", "rollout_temperature": "rollout_temperature",
          "c": "c", "prior": "prior", "value": "value", "max_depth": "max_depth", "rollout_depth": "rollout_depth",
          "max_turns": "max_turns", "batch_trees": "batch_trees", "seed": "seed", "out": "output",
          "workers": "workers", "ray": "ray", "gpus_per_worker": "gpus_per_worker"}


def _config(args: argparse.Namespace):
    from agentrm_jax.explore.config import ExploreConfig

    overrides = {key: getattr(args, flag) for flag, key in _FLAGS.items()}
    if args.config:
        return ExploreConfig.from_yaml(args.config, overrides)
    given = {k: v for k, v in overrides.items() if v is not None}
    return ExploreConfig.from_dict(given, source="command line", flagged=set(given))


def _cmd_explore(args: argparse.Namespace) -> int:
    from agentrm_jax.explore.runner import run_explore

    cfg = _config(args)
    from agentrm_jax.envs import REGISTRY

    where = ("worker(s)" if cfg.ray is None
             else "Ray actor(s) on " + ("a local runtime" if cfg.ray == "local" else cfg.ray))
    print(f"explore: {cfg.env} ({cfg.split}) x {len(cfg.seeds)} seed(s), policy {cfg.policy}"
          f"{f' noise {cfg.noise:g}' if cfg.policy in ('expert', 'random') else ''}, {cfg.simulations} simulations "
          f"x k={cfg.k} x {cfg.rollouts} rollouts, {cfg.workers} {where} -> {cfg.output}", file=sys.stderr)
    if cfg.env in REGISTRY and REGISTRY[cfg.env].role == "held_out":
        print(f"explore: note: {cfg.env} is a held-out env; AgentRM trains its RMs on held-in tasks only",
              file=sys.stderr)
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()
    counts = run_explore(cfg, progress=not args.no_progress)
    print(f"explore: {counts['trees']}/{len(cfg.seeds)} trees in {cfg.output} ({counts['written']} new, "
          f"{counts['skipped']} already there); make records with `agentrm samples --trees {cfg.output} "
          f"--out regression.jsonl`", file=sys.stderr)
    return 0


def _refuse_existing(path: str, force: bool, flag: str, *, inputs: dict[str, str] | None = None) -> None:
    """Refuse to write `path` when it exists (unless force) and, even with force, when it is one of
    `inputs` (flag -> path): --force replaces an old output, never the trees it is made from."""
    target = Path(path).resolve()
    for other_flag, other in (inputs or {}).items():
        if other and Path(other).resolve() == target:
            raise ValueError(f"{flag} {path} is the {other_flag} file; write to another path")
    if Path(path).exists() and not force:
        raise ValueError(f"{flag} {path} exists; pass --force to replace it or choose another path")


def _cmd_samples(args: argparse.Namespace) -> int:
    from agentrm_jax.explore.runner import read_trees
    from agentrm_jax.explore.samples import preference_pairs, regression_records
    from agentrm_jax.records import write_jsonl

    _refuse_existing(args.out, args.force, "--out", inputs={"--trees": args.trees})
    if args.pairs:
        _refuse_existing(args.pairs, args.force, "--pairs", inputs={"--trees": args.trees, "--out": args.out})
    trees = read_trees(args.trees)
    records = regression_records(trees, min_visits=args.min_visits, balance=args.balance)
    pairs = preference_pairs(trees, min_visits=args.min_visits, margin=args.margin) if args.pairs else None
    write_jsonl(args.out, records)
    nodes = sum(len(t.nodes) for t in trees)
    print(f"samples: {len(records)} regression records (distinct states with >= {args.min_visits} visits"
          f"{', balanced' if args.balance else ''}) from {nodes} nodes of {len(trees)} trees -> {args.out}",
          file=sys.stderr)
    if pairs is not None:
        write_jsonl(args.pairs, pairs)
        print(f"samples: {len(pairs)} sibling pairs (value gap >= {args.margin:g}) -> {args.pairs}", file=sys.stderr)
    return 0


def _cmd_tree_show(args: argparse.Namespace) -> int:
    from agentrm_jax.explore.runner import read_trees
    from agentrm_jax.explore.show import render_html, render_text

    trees = read_trees(args.trees)
    if not trees:
        raise ValueError(f"{args.trees} holds no trees yet")
    chosen = [t for t in trees if (args.seed is None or t.seed == args.seed) and (args.env is None or t.env == args.env)]
    if not chosen:
        seeds = ", ".join(str(t.seed) for t in trees[:20])
        raise ValueError(f"{args.trees}: no tree for seed {args.seed}{f' of env {args.env}' if args.env else ''}; "
                         f"seeds there: {seeds}{' ...' if len(trees) > 20 else ''}")
    tree = chosen[0]
    if args.html:
        _refuse_existing(args.html, args.force, "--html", inputs={"--trees": args.trees})
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(render_html(tree), encoding="utf-8")
        print(f"tree show: {tree.key} ({len(tree.nodes)} nodes) -> {args.html}", file=sys.stderr)
        return 0
    print(render_text(tree, depth=args.depth))
    return 0


def _cmd_tree_stats(args: argparse.Namespace) -> int:
    import json

    from agentrm_jax.explore.runner import read_trees
    from agentrm_jax.explore.stats import format_stats, tree_stats

    trees = [t for path in args.trees for t in read_trees(path)]
    if not trees:
        raise ValueError(f"{', '.join(args.trees)}: no trees (the file{'s hold' if len(args.trees) > 1 else ' holds'} "
                         "only a header); grow some with `agentrm explore`")
    stats = tree_stats(trees)
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0


def register(subparsers) -> None:
    """Add `explore`, `samples` and `tree` to the `agentrm` command."""
    ex = subparsers.add_parser(
        "explore", help="MCTS exploration: one tree of state values per task seed, resumable JSONL",
        description="Grow a Monte Carlo search tree per task seed with a policy (UCT selection, expansion of k "
                    "sampled steps, m rollouts per new node whose mean outcome is its value, backup to the "
                    "root) and append one JSON tree per line to --out as it finishes. Rerunning resumes; a "
                    "file written by another config is refused. Flags override --config's keys. Example: "
                    "agentrm explore --env maze --seeds 0-99 --policy expert --noise 0.3 --simulations 16 "
                    "--k 4 --rollouts 2 --out trees.jsonl")
    ex.add_argument("--config", help="YAML explore config (see configs/explore_cpu.yaml)")
    ex.add_argument("--env", help="environment name (e.g. maze, pddl)")
    ex.add_argument("--split", choices=["train", "test"], help="task split (default train)")
    ex.add_argument("--seeds", help="task seeds: a range 0-99, a list 0,3,7, or both 0-4,9")
    ex.add_argument("--policy", help="expert, random, bundled, a model path or an http(s):// URL (default expert)")
    ex.add_argument("--noise", type=float, help="expert/random: probability of a random action (default 0)")
    ex.add_argument("--policy-seed", type=int, help="seed of the expert's noise / the random policy")
    ex.add_argument("--max-new-tokens", type=int, help="model policies: tokens per step at most (default 96)")
    ex.add_argument("--kv-cache-mb", type=float,
                    help="in-process model policies: MB of prefix KV cache shared by a tree's expansions and "
                         "rollouts (default 0 = off)")
    ex.add_argument("--drop-tokens", type=int,
                    help="in-process model policies: a context longer than the model's window loses its oldest "
                         "steps in blocks of this many tokens (default a quarter of the window); a tree field")
    ex.add_argument("--concurrency", type=int,
                    help="served (http) policies: requests in flight at once, e.g. the contexts of a batched "
                         "expansion; set it to the server's parallel slots (default 1)")
    ex.add_argument("--simulations", type=int, help="simulations per tree (default 16)")
    ex.add_argument("--k", type=int, help="steps sampled per expansion (default 4)")
    ex.add_argument("--rollouts", type=int, help="rollouts from every new node (default 2)")
    ex.add_argument("--temperature", type=float, help="expansion temperature (default 1.0)")
    ex.add_argument("--rollout-temperature", type=float, help="rollout temperature (default: --temperature)")
    ex.add_argument("--c", type=float, help="UCT exploration constant (default 1.0)")
    ex.add_argument("--prior", action="store_true", default=None,
                    help="scale exploration by the policy's sample frequency of each child")
    ex.add_argument("--value", choices=["success", "progress"], help="rollout outcome (default success)")
    ex.add_argument("--max-depth", type=int, help="do not expand nodes this deep (default: the env's turn limit)")
    ex.add_argument("--rollout-depth", type=int, help="steps per rollout at most (default: to the end)")
    ex.add_argument("--max-turns", type=int, help="the env's turn limit (default: its own)")
    ex.add_argument("--batch-trees", type=int, help="trees grown in lockstep, one policy call per turn (default 8)")
    ex.add_argument("--seed", type=int, help="sampling seed of the run (default 0)")
    ex.add_argument("--out", help="trees JSONL (default trees.jsonl)")
    ex.add_argument("--workers", type=int, help="worker processes, or Ray actors with --ray (default 1)")
    ex.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="grow trees on Ray actors (one per worker): a local runtime on 127.0.0.1, or join the "
                         "cluster at ADDRESS (auto, HOST:PORT); needs pip install 'agentrm_jax[ray]'")
    ex.add_argument("--gpus-per-worker", type=float, help="with --ray: GPUs each actor reserves (default 0)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=_cmd_explore)

    sa = subparsers.add_parser(
        "samples", help="trees -> regression records (state, MCTS value) for `agentrm train`, and pairs",
        description="Write every distinct state of the trees with enough visits as a regression record: the "
                    "trajectory that reaches it, value = its mean outcome in [0, 1] (states equal in task, "
                    "actions and observations are merged, visit-weighted). --pairs also writes sibling "
                    "chosen/rejected pairs whose values differ by at least --margin.")
    sa.add_argument("--trees", required=True, help="trees JSONL written by `agentrm explore`")
    sa.add_argument("--out", required=True, help="regression records JSONL to write")
    sa.add_argument("--min-visits", type=int, default=1, help="keep states with at least this many visits")
    sa.add_argument("--balance", action="store_true", help="as many records with value >= 0.5 as below it")
    sa.add_argument("--pairs", help="also write sibling preference pairs (Bradley-Terry) to this JSONL")
    sa.add_argument("--margin", type=float, default=0.2, help="least value gap of a pair (default 0.2)")
    sa.add_argument("--force", action="store_true", help="replace existing output files")
    sa.set_defaults(func=_cmd_samples)

    tr = subparsers.add_parser("tree", help="look at an explore tree: `agentrm tree show trees.jsonl --seed S`",
                               description="Inspect the trees `agentrm explore` wrote.")
    tsub = tr.add_subparsers(dest="tree_command", required=True)
    show = tsub.add_parser("show", help="best path and top of one tree (or --html for a collapsible page)",
                           description="Print one tree's best path and its top levels with value bars and "
                                       "visits, or write it as one self-contained HTML page with --html.")
    show.add_argument("trees", help="trees JSONL written by `agentrm explore`")
    show.add_argument("--seed", type=int, help="task seed of the tree (default: the first tree)")
    show.add_argument("--env", help="env of the tree, where the file holds several")
    show.add_argument("--depth", type=int, default=2, help="levels printed below the root (default 2)")
    show.add_argument("--html", help="write an HTML page here instead of printing")
    show.add_argument("--force", action="store_true", help="replace an existing --html file")
    show.set_defaults(func=_cmd_tree_show)
    stats = tsub.add_parser("stats", help="trees, nodes, value spread and roots with a success, per env and split",
                            description="Summarise trees files: trees, nodes, the spread of node values (mean, "
                                        "sd, quantiles, the fraction strictly between 0 and 1), the mean root "
                                        "value and the fraction of trees with at least one success.")
    stats.add_argument("trees", nargs="+", help="trees JSONL files written by `agentrm explore`")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")
    stats.set_defaults(func=_cmd_tree_stats)
