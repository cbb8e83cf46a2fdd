"""`agentrm eval` and `agentrm report`: `register(subparsers)` adds them to the `agentrm` CLI.

    agentrm eval --config configs/eval_scripted.yaml [--envs maze --seeds 5 --workers 2 ...]
    agentrm report results/eval_scripted.jsonl [--out DIR]
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _seeds(text: str):
    """--seeds: "20" is a count, "0,3,7" (any comma) a list of task seeds."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (20) or a comma-separated list of task seeds "
                                         f"(0,3,7), got {text!r}") from None


def _config_from_args(args: argparse.Namespace):
    from agentrm_jax.evaluate.config import EvalConfig

    overrides = {"envs": args.envs, "seeds": args.seeds, "seed_offset": args.seed_offset, "methods": args.methods,
                 "policy": args.policy, "noise": args.noise, "rm": args.rm, "output": args.out,
                 "workers": args.workers, "max_turns": args.max_turns, "temperature": args.temperature,
                 "split": args.split, "max_new_tokens": args.max_new_tokens, "lockstep": args.lockstep,
                 "kv_cache_mb": args.kv_cache_mb, "concurrency": args.concurrency,
                 "drop_tokens": args.drop_tokens}
    if args.config:
        return EvalConfig.from_yaml(args.config, overrides)
    return EvalConfig.from_dict({k: v for k, v in overrides.items() if v is not None}, source="command line")


def _cmd_eval(args: argparse.Namespace) -> int:
    from agentrm_jax.evaluate.runner import plan_episodes, read_rows, run_eval

    cfg = _config_from_args(args)  # every check that needs no model happens here
    episodes = plan_episodes(cfg)
    print(f"eval: {len(cfg.envs)} env(s) x {len(cfg.methods)} method(s) x {len(cfg.task_seeds)} seed(s) = "
          f"{len(episodes)} episodes; policy {cfg.policy_label}, rm {cfg.rm_label}, {cfg.workers} worker(s) "
          f"-> {cfg.output}", file=sys.stderr)
    if args.dry_run:
        for ep in episodes:
            print(ep.key)
        return 0
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()
    # this process is ours: dropping compiled programs after each lockstep turn keeps a long group's memory flat
    out = run_eval(cfg, progress=not args.no_progress, release_memory=True)
    keys = {ep.key for ep in episodes}
    rows = [r for r in read_rows(out) if r.get("key") in keys]
    wins = sum(bool(r.get("success")) for r in rows)
    print(f"eval: {len(rows)}/{len(episodes)} episodes in {out}, success {wins}/{len(rows)}; "
          f"summarise with `agentrm report {out}`", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from agentrm_jax.evaluate.report import write_report

    md_path, pngs, markdown = write_report(args.results, args.out)
    print(markdown)
    print(f"report: {md_path}" + (f", plots: {', '.join(str(p) for p in pngs)}" if pngs else ""), file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `eval` and `report` to the `agentrm` command."""
    ev = subparsers.add_parser(
        "eval", help="evaluate search methods: envs x methods x seeds, resumable JSONL rows",
        description="Play every (env, method, seed) episode of an eval config with a policy and a reward model "
                    "and append one row per episode to the output JSONL as it ends (env, seed, method, params, "
                    "trajectory, success, progress, score, costs, rm, baselines, key). Rerunning resumes: "
                    "episodes already in the output are skipped, a torn last line is cut. Flags override the "
                    "config's keys; without --config everything comes from flags and defaults. Example: "
                    "agentrm eval --config configs/eval_scripted.yaml --seeds 5 --workers 2")
    ev.add_argument("--config", help="YAML eval config (keys: policy, noise, policy_seed, max_new_tokens, kv_cache_mb, concurrency, drop_tokens, rm, "
                                     "rm_batch_size, envs, split, seeds, seed_offset, methods, temperature, "
                                     "max_turns, output, workers; see configs/eval_scripted.yaml)")
    ev.add_argument("--envs", nargs="+", help="environment names (overrides envs), e.g. --envs maze pddl")
    ev.add_argument("--split", choices=["train", "test"], help="task split (overrides split; default test)")
    ev.add_argument("--seeds", type=_seeds, help="task seeds: a count (20: seeds 0..19 after --seed-offset) or a "
                                                 "comma-separated list (0,3,7)")
    ev.add_argument("--seed-offset", type=int, help="added to every task seed (overrides seed_offset)")
    ev.add_argument("--methods", nargs="+",
                    help="methods, one per word: greedy, best_of_n=1,2,4 (N values), beam=2x2,4x4 (W beams x K "
                         "steps per beam); overrides methods")
    ev.add_argument("--policy", help="bundled | expert | random | MODEL_PATH (HF dir or .gguf) | "
                                     "http(s)://HOST:PORT/v1[#model] (overrides policy)")
    ev.add_argument("--noise", type=float, help="expert policy: probability of a random action per turn")
    ev.add_argument("--max-new-tokens", type=int, help="model policies: tokens per step at most (default 96)")
    ev.add_argument("--kv-cache-mb", type=float,
                    help="in-process model policies: MB of prefix KV cache, so a turn prefills only what its "
                         "context added (overrides kv_cache_mb; default 0 = off)")
    ev.add_argument("--drop-tokens", type=int,
                    help="in-process model policies: a context longer than the model's window loses its oldest "
                         "steps in blocks of this many tokens (overrides drop_tokens; default a quarter of the "
                         "window; 1: one step at a time); part of the policy label")
    ev.add_argument("--concurrency", type=int,
                    help="served (http) policies: requests in flight at once, e.g. a lockstep turn's contexts; set "
                         "it to the server's parallel slots (overrides concurrency; default 1)")
    ev.add_argument("--rm", help="scorer of Best-of-N and beam candidates: oracle | random[:SEED] | RM_DIR | "
                                 "explicit:RM_DIR | judge:(bundled|MODEL_PATH|URL[#model]) | "
                                 "implicit:POLICY,REFERENCE (overrides rm)")
    ev.add_argument("--temperature", type=float, help="sampling temperature of Best-of-N and beam candidates")
    ev.add_argument("--max-turns", type=int, help="turns per episode at most (default: the env's own limit)")
    ev.add_argument("--out", help="output JSONL, appended to and resumed from (overrides output)")
    ev.add_argument("--workers", type=int, help="worker processes (each loads the policy and RM once); rows are "
                                                "the same as with one worker")
    ev.add_argument("--lockstep", type=int, help="greedy episodes of one env played together, up to this many "
                                                 "(one batched policy call per turn; default 16, 1: one at a time)")
    ev.add_argument("--dry-run", action="store_true", help="check the config and print the episode keys; play nothing")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_eval)

    rep = subparsers.add_parser(
        "report", help="markdown table and scaling plots from eval rows",
        description="Summarise an `agentrm eval` JSONL: a markdown table (rows: methods with their sizes, plus "
                    "random pick and pass@N from the Best-of-N samples; columns: envs, held-in then held-out, "
                    "then averages; cells: success rate with a 95% Wilson interval and mean progress with a 95% "
                    "t interval over task seeds) written to DIR/results.md and printed, and PNG plots of success "
                    "vs N (Best-of-N) and vs beam width, per env (DIR/scaling_<env>.png) and averaged "
                    "(DIR/scaling_mean.png).")
    rep.add_argument("results", help="eval rows JSONL (from `agentrm eval`)")
    rep.add_argument("--out", default=None, help="directory for results.md and the PNGs (default: the results "
                                                 "file's directory)")
    rep.set_defaults(func=_cmd_report)
