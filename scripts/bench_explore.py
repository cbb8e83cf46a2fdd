"""Benchmark: MCTS exploration simulations per second on maze (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_explore.py                # noisy expert, then the bundled model
    PYTHONPATH=. python scripts/bench_explore.py --json --warmup

Scenarios (each grows trees with `explore.run_explore` into a temporary file):
  expert       the noisy expert (`--expert-seeds` maze train tasks, 16 simulations, k=4, 2 rollouts): the
               search's own cost (tree bookkeeping, env steps, snapshots), no model
  bundled      the bundled SmolLM2-135M-Instruct as the policy at a tiny budget (`--seeds`, `--simulations`,
               `--k`, `--rollouts`, rollouts of at most `--depth` steps), twice on one loaded model: with
               the sampler's prefix KV cache (`JaxPolicy(prefix_cache=True)`) and without; the ratio is
               the cache's speed-up, measured in the same run

Figures: wall seconds, simulations/s, policy calls, prompt and prefilled tokens (from `PolicyStats`)
and whether both sides grew identical trees. Compiles are timed unless --warmup (which grows each
bundled side once untimed first). With --fresh, each bundled side runs cold in its own child process
(so neither reuses programs the other compiled; the ratio is then of two cold starts).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _grow(cfg, policy=None) -> tuple[float, list[dict]]:
    from agentrm_jax.explore.runner import read_trees_file, run_explore

    start = time.perf_counter()
    run_explore(cfg, policy=policy, progress=False)
    wall = time.perf_counter() - start
    return wall, read_trees_file(cfg.output)[1]


def bench_expert(tmp: Path, seeds: int, noise: float) -> dict:
    from agentrm_jax.explore.config import ExploreConfig

    cfg = ExploreConfig(env="maze", seeds=tuple(range(seeds)), policy="expert", noise=noise, simulations=16, k=4,
                        rollouts=2, output=str(tmp / "expert.jsonl"))
    wall, rows = _grow(cfg)
    sims = cfg.simulations * len(rows)
    return {"scenario": "expert", "trees": len(rows), "simulations": sims, "nodes": sum(len(r["nodes"]) for r in rows),
            "wall_s": round(wall, 2), "sims_per_s": round(sims / wall, 2)}


def bench_bundled(tmp: Path, *, seeds: int, simulations: int, k: int, rollouts: int, depth: int,
                  max_new_tokens: int, warmup: bool, sides: tuple[bool, ...] = (True, False)) -> dict:
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.explore.config import ExploreConfig
    from agentrm_jax.models import bundled_model_path, from_pretrained

    model, tokenizer = from_pretrained(bundled_model_path())
    base = ExploreConfig(env="maze", seeds=tuple(range(seeds)), policy="bundled", simulations=simulations, k=k,
                         rollouts=rollouts, rollout_depth=depth, max_depth=depth, max_new_tokens=max_new_tokens,
                         temperature=1.0)
    out = {"scenario": "bundled", "trees": seeds, "simulations": simulations * seeds, "k": k, "rollouts": rollouts,
           "depth": depth, "max_new_tokens": max_new_tokens, "compiles_timed": not warmup}
    trees = {}
    for cached in sides:
        name = "cached" if cached else "plain"
        if warmup:
            _grow(base.replace(output=str(tmp / f"warm_{name}.jsonl")),
                  JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens, prefix_cache=cached))
        policy = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens, prefix_cache=cached)
        wall, rows = _grow(base.replace(output=str(tmp / f"{name}.jsonl")), policy)
        s = policy.stats
        trees[cached] = {r["key"]: r["nodes"] for r in rows}
        out.update({f"wall_s_{name}": round(wall, 2), f"sims_per_s_{name}": round(simulations * seeds / wall, 3),
                    f"calls_{name}": s.calls, f"prompt_tokens_{name}": s.prompt_tokens,
                    f"prefilled_tokens_{name}": s.prefilled_tokens,
                    f"nodes_{name}": sum(len(r["nodes"]) for r in rows)})
    if len(sides) == 2:
        out["speedup"] = round(out["wall_s_plain"] / out["wall_s_cached"], 2)
        out["identical_trees"] = trees[True] == trees[False]
    else:
        out["trees_json"] = json.dumps(trees[sides[0]], sort_keys=True)
    return out


def bench_bundled_fresh(argv: list[str]) -> dict:
    """Each side cold in its own child process (this script with --side), merged into one result."""
    import subprocess
    import sys

    merged: dict = {}
    for side in ("cached", "plain"):
        proc = subprocess.run([sys.executable, __file__, *argv, "--side", side, "--json", "--skip-expert"],
                              check=True, capture_output=True, text=True)
        merged.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        merged[f"trees_{side}"] = merged.pop("trees_json")
    merged["speedup"] = round(merged["wall_s_plain"] / merged["wall_s_cached"], 2)
    merged["identical_trees"] = merged.pop("trees_cached") == merged.pop("trees_plain")
    merged["compiles_timed"] = "each side cold, own process"
    return merged


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--expert-seeds", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--simulations", type=int, default=2)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--rollouts", type=int, default=1)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--warmup", action="store_true", help="grow each bundled side once untimed first")
    ap.add_argument("--skip-bundled", action="store_true")
    ap.add_argument("--skip-expert", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="run each bundled side cold in its own process")
    ap.add_argument("--side", choices=["cached", "plain"], help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="one JSON object per scenario")
    args = ap.parse_args(argv)
    shared = ["--seeds", str(args.seeds), "--simulations", str(args.simulations), "--k", str(args.k), "--rollouts",
              str(args.rollouts), "--depth", str(args.depth), "--max-new-tokens", str(args.max_new_tokens)]
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_expert:
            results.append(bench_expert(Path(tmp), args.expert_seeds, args.noise))
            _report(results[-1], args.json)
        if args.skip_bundled:
            pass
        elif args.fresh:
            results.append(bench_bundled_fresh(shared))
            _report(results[-1], args.json)
        else:
            sides = (True, False) if args.side is None else (args.side == "cached",)
            results.append(bench_bundled(Path(tmp), seeds=args.seeds, simulations=args.simulations, k=args.k,
                                         rollouts=args.rollouts, depth=args.depth,
                                         max_new_tokens=args.max_new_tokens, warmup=args.warmup, sides=sides))
            _report(results[-1], args.json or args.side is not None)


def _report(r: dict, as_json: bool) -> None:
    """Print one scenario's figures as soon as they are measured (a killed run keeps what it printed)."""
    if as_json:
        line = json.dumps(r)
    elif r["scenario"] == "expert":
        line = (f"expert: {r['trees']} trees, {r['simulations']} simulations in {r['wall_s']} s = "
                f"{r['sims_per_s']} sims/s ({r['nodes']} nodes)")
    else:
        line = (f"bundled: {r['simulations']} simulations (k={r['k']}, {r['rollouts']} rollout, depth {r['depth']}): "
                f"cache {r['wall_s_cached']} s ({r['sims_per_s_cached']} sims/s, {r['prefilled_tokens_cached']} "
                f"prefilled), no cache {r['wall_s_plain']} s ({r['sims_per_s_plain']} sims/s, "
                f"{r['prefilled_tokens_plain']} prefilled); cache speed-up {r['speedup']}x; "
                f"identical trees: {r['identical_trees']}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
