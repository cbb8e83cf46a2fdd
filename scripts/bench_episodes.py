"""Benchmark: agent episodes with and without the sampler's prefix KV cache (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_episodes.py                      # lockstep: 8 maze seeds, 6 turns
    PYTHONPATH=. python scripts/bench_episodes.py --turns 4 --json     # one JSON object per scenario

Scenarios:
  lockstep  `len(--seeds)` maze test tasks played greedily together (`agents.loop.play_lockstep`,
            one `JaxPolicy.sample` call per turn) for `--turns` turns with the bundled model.
  single    the same tasks played one after another (`run_episode`), one context per call.

Each scenario runs on one loaded model, prefix cache on and off (`prefix_cache=False`): wall
time (compiles included unless --warmup, which plays each side once untimed first; with --repeats
the timed plays alternate sides and the fastest counts), tokens prefilled, cache-hit tokens, tokens
of a call's common prefix prefilled once for several rows (`shared_tokens_*`), `unique_tokens`
(the distinct token prefixes of all contexts: what a perfect prefix cache would prefill) and
`identical` (both sides took the same actions).
"""

from __future__ import annotations

import argparse
import json
import time


class _Recording:
    """A policy wrapper that keeps every context it was asked about."""

    def __init__(self, policy):
        self.policy, self.contexts = policy, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.contexts.extend(contexts)
        return self.policy.sample(contexts, n=n, temperature=temperature, seed=seed)


def _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb):
    from agentrm_jax.agents.loop import play_lockstep, run_episode
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.envs import make

    policy = JaxPolicy(model, tokenizer, max_new_tokens=max_new_tokens, prefix_cache=cached,
                       kv_cache_mb=kv_cache_mb, max_batch=max(8, len(seeds)))
    recording = _Recording(policy)
    start = time.perf_counter()
    if scenario == "lockstep":
        envs = [make("maze", split="test", max_turns=turns) for _ in seeds]
        firsts = [env.reset(s) for env, s in zip(envs, seeds)]
        trajectories = play_lockstep(envs, recording, seed=0, max_turns=turns, first_observations=firsts,
                                     ids=[f"maze/test/{s}" for s in seeds])
    else:
        trajectories = [run_episode(make("maze", split="test", max_turns=turns), recording, seed=s) for s in seeds]
    wall = time.perf_counter() - start
    actions = [[step.action for step in t.steps] for t in trajectories]
    return wall, policy, recording.contexts, actions


def bench(scenario, model, tokenizer, *, seeds, turns, max_new_tokens, kv_cache_mb, warmup, repeats=1):
    """One scenario's figures (a JSON-able dict)."""
    from agentrm_jax.sampling.prefix_cache import distinct_prefix_tokens

    out = {"scenario": scenario, "episodes": len(seeds), "turns": turns, "max_new_tokens": max_new_tokens,
           "kv_cache_mb": kv_cache_mb, "compiles_timed": not warmup}
    if warmup:
        for cached in (True, False):
            _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb)
    # Timed plays alternate sides (the order flips each repeat) so that a shared machine's load
    # swings hit both; each side keeps its fastest play.
    sides, walls = {}, {True: [], False: []}
    for rep in range(repeats):
        for cached in ((True, False) if rep % 2 == 0 else (False, True)):
            sides[cached] = _play(scenario, model, tokenizer, seeds, turns, cached, max_new_tokens, kv_cache_mb)
            walls[cached].append(sides[cached][0])
    (_, pol_c, contexts, actions_c), (_, pol_p, _, actions_p) = sides[True], sides[False]
    wall_c, wall_p = min(walls[True]), min(walls[False])
    out["repeats"] = repeats
    sc, sp = pol_c.stats, pol_p.stats
    out.update(
        calls=sc.calls, contexts=sc.contexts, prompt_tokens=sc.prompt_tokens,
        unique_tokens=distinct_prefix_tokens([pol_c._encode(c) for c in contexts]),
        prefilled_tokens_cached=sc.prefilled_tokens, prefilled_tokens_plain=sp.prefilled_tokens,
        cache_hit_tokens=sc.cache_hit_tokens, cache_evictions=sc.cache_evictions, cache_bytes=sc.cache_bytes,
        shared_tokens_cached=pol_c.sampler.stats.shared_tokens, shared_tokens_plain=pol_p.sampler.stats.shared_tokens,
        wall_s_cached=round(wall_c, 2), wall_s_plain=round(wall_p, 2),
        speedup=round(wall_p / wall_c, 2) if wall_c else None,
        identical=actions_c == actions_p)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=["lockstep", "single"],
                        help="scenarios to run (repeatable; default: lockstep)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)), help="maze test seeds")
    parser.add_argument("--turns", type=int, default=6, help="turns per episode (default 6)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--kv-cache-mb", type=float, default=512.0)
    parser.add_argument("--warmup", action="store_true", help="play each side once untimed first (compiles)")
    parser.add_argument("--repeats", type=int, default=1, help="timed plays per side, alternating (best kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario")
    args = parser.parse_args(argv)
    if args.turns < 1:
        parser.error(f"--turns must be >= 1, got {args.turns}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    from agentrm_jax.models import bundled_model_path, from_pretrained

    model, tokenizer = from_pretrained(bundled_model_path())
    for scenario in args.scenario or ["lockstep"]:
        result = bench(scenario, model, tokenizer, seeds=args.seeds, turns=args.turns,
                       max_new_tokens=args.max_new_tokens, kv_cache_mb=args.kv_cache_mb, warmup=args.warmup,
                       repeats=args.repeats)
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{scenario}: {result['episodes']} episodes x {result['turns']} turns, "
                  f"identical actions: {result['identical']}")
            print(f"  wall s        cached {result['wall_s_cached']:>9}   plain {result['wall_s_plain']:>9}   "
                  f"speedup {result['speedup']}")
            print(f"  prefilled     cached {result['prefilled_tokens_cached']:>9}   plain "
                  f"{result['prefilled_tokens_plain']:>9}   unique {result['unique_tokens']}")
            print(f"  shared once   cached {result['shared_tokens_cached']:>9}   plain "
                  f"{result['shared_tokens_plain']:>9}   (a call's common prefix, prefilled for one row)")
            print(f"  cache         hits {result['cache_hit_tokens']}  evictions {result['cache_evictions']}  "
                  f"MB held {result['cache_bytes'] / 2**20:.1f}")


if __name__ == "__main__":
    main()
