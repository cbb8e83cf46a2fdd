"""Greedy success and progress of a policy on each environment (the figures in docs/ENVIRONMENTS.md).

    PYTHONPATH=. python scripts/measure_envs.py --envs maze babyai pddl --seeds 20 --split test
    PYTHONPATH=. python scripts/measure_envs.py --policy expert --seeds 5        # sanity: every env solvable

Episodes of one env run in lockstep: each turn, the live episodes' contexts go
to the policy in one `sample` call (the JAX policy batches them), so 20 seeds
cost about as many policy calls as one. Greedy decoding, one-shot prompts,
each env's default max_turns unless --max-turns. Rows are appended to --out
(JSONL, one per episode) and a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=["maze", "babyai", "pddl", "tools", "textworld", "sciworld"])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--policy", default="bundled", help="bundled | expert | a model path")
    p.add_argument("--max-turns", type=int, default=None, help="cap on turns (default: each env's own)")
    p.add_argument("--batch", type=int, default=8, help="policy batch per forward (20 live episodes = 8 + 8 + 4 rows: no padded rows)")
    p.add_argument("--out", default="env_measurements.jsonl")
    args = p.parse_args(argv)

    from agentrm_jax.agents.loop import play_lockstep
    from agentrm_jax.records import append_jsonl
    from agentrm_jax.envs import make
    from agentrm_jax.evaluate.statistics import wilson_interval

    policy = None
    if args.policy != "expert":
        from agentrm_jax.agents.policies import JaxPolicy

        policy = JaxPolicy.from_pretrained(None if args.policy == "bundled" else args.policy, max_batch=args.batch)
    rows = []
    for name in args.envs:
        t0 = time.perf_counter()
        envs = [make(name, seed=seed, split=args.split) for seed in range(args.seeds)]
        firsts = [env.reset(seed) for seed, env in enumerate(envs)]
        if policy is None:
            from agentrm_jax.agents.loop import run_episode
            from agentrm_jax.agents.policies import ScriptedPolicy

            trajectories = [run_episode(env, ScriptedPolicy.expert(env), seed=env.seed, env_name=name)
                            for env in envs]
        else:
            limit = min(e.max_turns for e in envs) if args.max_turns is None else args.max_turns
            trajectories = play_lockstep(envs, policy, seed=0, max_turns=limit, first_observations=firsts,
                                         env_name=name, ids=[f"{e.name}/{e.split}/{e.seed}" for e in envs])
        append_jsonl(args.out, [{"env": name, "split": args.split, "policy": args.policy,
                                 "trajectory": t.to_dict()} for t in trajectories])
        wins = sum(bool(t.success) for t in trajectories)
        progress = sum(t.progress for t in trajectories) / len(trajectories)
        lo, hi = wilson_interval(wins, len(trajectories))
        rows.append((name, wins, len(trajectories), lo, hi, progress, time.perf_counter() - t0))
        print(f"{name}: success {wins}/{len(trajectories)}, progress {progress:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    print("| env | success | 95% CI | mean progress | seeds | time |")
    print("|---|---|---|---|---|---|")
    for name, wins, n, lo, hi, progress, secs in rows:
        print(f"| {name} | {wins / n:.2f} ({wins}/{n}) | [{lo:.2f}, {hi:.2f}] | {progress:.3f} | {n} | {secs:.0f} s |")
    print(json.dumps({"command": " ".join(sys.argv)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
