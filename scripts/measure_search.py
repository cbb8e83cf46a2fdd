"""Greedy vs Best-of-N vs beam search with the bundled policy (the figures in docs/RESULTS.md).

    PYTHONPATH=. python scripts/measure_search.py --envs maze babyai pddl --seeds 10 --max-turns 6 \
        --n 4 --beams 2x2 --scorers oracle random --out results/bundled_search.jsonl

A thin driver over `agentrm_jax.search` for one long measurement in one
process (one policy load, episodes in order): it appends one eval row per
episode (DESIGN.md's eval-row schema, the same rows `agentrm eval` writes) and
skips episodes already in --out, so an interrupted run resumes. Best-of-N runs
once at the largest N with the first scorer: its rows carry RM pick, random
pick (= a random scorer's choice) and pass@n for every smaller power of two.
Summarise with `agentrm report OUT`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _key(*parts) -> str:
    return json.dumps(parts)


def _done_keys(path: str) -> set[str]:
    keys: set[str] = set()
    if not os.path.exists(path):
        return keys
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line from a killed run
            f.truncate(end)
    for line in data[:end].decode().splitlines():
        if line.strip():
            keys.add(json.loads(line)["key"])
    return keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", nargs="+", default=["maze", "babyai", "pddl"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--max-turns", type=int, default=6)
    p.add_argument("--n", type=int, default=4, help="Best-of-N sample count (smaller powers of two come free)")
    p.add_argument("--beams", nargs="*", default=["2x2"], help="beam shapes WxK")
    p.add_argument("--scorers", nargs="+", default=["oracle", "random"], choices=["oracle", "random"])
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--policy", default="bundled", help="bundled | a model path")
    p.add_argument("--out", default="results/bundled_search.jsonl")
    args = p.parse_args(argv)

    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.agents.trajectory import append_jsonl
    from agentrm_jax.envs import make
    from agentrm_jax.search import (OracleScorer, RandomScorer, SearchConfig, beam_search, best_of_n, greedy)

    scorers = {"oracle": OracleScorer(), "random": RandomScorer(seed=0)}
    policy = JaxPolicy.from_pretrained(None if args.policy == "bundled" else args.policy, max_batch=8)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    done = _done_keys(args.out)
    plan = [("greedy", None, None)] + [("best_of_n", args.n, args.scorers[0])]
    for shape in args.beams:
        w, k = (int(x) for x in shape.lower().split("x"))
        plan += [("beam", (w, k), s) for s in args.scorers]
    for env_name in args.envs:
        t0 = time.perf_counter()
        for method, arg, scorer in plan:
            for seed in range(args.seeds):
                key = _key(env_name, args.split, seed, method, arg, scorer, args.max_turns, args.temperature)
                if key in done:
                    continue
                cfg = SearchConfig(seed=seed, max_turns=args.max_turns, temperature=args.temperature,
                                   n=arg if method == "best_of_n" else 1,
                                   beam_width=arg[0] if method == "beam" else 1,
                                   expansions=arg[1] if method == "beam" else 1)
                factory = lambda: make(env_name, split=args.split)  # noqa: E731
                if method == "greedy":
                    result = greedy(policy, factory, cfg)
                elif method == "best_of_n":
                    result = best_of_n(policy, scorers[scorer], factory, cfg)
                else:
                    result = beam_search(policy, scorers[scorer], factory, cfg)
                row = {"key": key, "env": env_name, "split": args.split, "seed": seed, "rm": scorer or "none",
                       "policy": args.policy, **result.to_dict()}
                append_jsonl(args.out, [row])
                done.add(key)
                print(f"{env_name} seed {seed} {method} {row['params']} {scorer or ''}: success {row['success']} "
                      f"progress {row['progress']:.2f} ({row['costs']['wall_s']:.0f} s)", file=sys.stderr,
                      flush=True)
        print(f"{env_name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(json.dumps({"command": " ".join(sys.argv), "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
