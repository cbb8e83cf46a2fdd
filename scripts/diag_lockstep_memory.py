"""Memory and compiles of one greedy lockstep group, turn by turn (docs/BENCHMARKS.md, "Memory and
compiles of a long lockstep eval").

    python scripts/diag_lockstep_memory.py --env twx --turns 8 [--kv-cache-mb 4000] [--trim]

Plays the env's 20 test seeds greedily in one lockstep group with the bundled policy (as the split
baseline does) and prints after each turn: process RSS, bytes of live jax arrays, prefix-cache bytes
and pool pages, prefilled / generated tokens, how many programs each sampler jit holds (dispatch-cache
entries: one shape seen both as fresh and as jit-output arrays counts twice) and how many XLA compiles
really ran, with their seconds.
--trim calls glibc's malloc_trim(0) after each turn and prints the RSS before it (Linux only).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import tempfile
import time


def rss_gb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1e6
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="twx")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--kv-cache-mb", type=float, default=4000.0)
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) after each turn")
    ap.add_argument("--clear-caches", action="store_true",
                    help="jax.clear_caches() after each turn (before the trim): what compiled programs hold")
    args = ap.parse_args()

    import jax

    from agentrm_jax.evaluate import EvalConfig, parse_methods
    from agentrm_jax.evaluate.runner import EpisodeRunner, plan_episodes
    from agentrm_jax.sampling.sampler import compile_counts

    out = os.path.join(tempfile.mkdtemp(), "diag.jsonl")
    cfg = EvalConfig(policy="bundled", rm="oracle", envs=(args.env,), split="test", seeds=args.seeds,
                     methods=parse_methods(["greedy"]), max_turns=args.turns, lockstep=args.seeds,
                     kv_cache_mb=args.kv_cache_mb, max_new_tokens=96, output=out)
    compiles: list[float] = []  # seconds of each XLA backend compile
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **_: compiles.append(secs) if event.endswith("backend_compile_duration") else None)
    runner = EpisodeRunner(cfg)
    sampler = runner.policy_for(args.env, 0).sampler
    libc = ctypes.CDLL("libc.so.6") if args.trim else None
    t0 = time.perf_counter()

    def on_turn(turn: int, limit: int, live: int) -> None:
        if args.clear_caches:
            before = rss_gb()
            jax.clear_caches()
            print(f"  rss before clear_caches {before:.2f} GB", flush=True)
        if libc is not None:
            before, t1 = rss_gb(), time.perf_counter()
            libc.malloc_trim(0)
            print(f"  rss before trim {before:.2f} GB, trim took {(time.perf_counter() - t1) * 1e3:.0f} ms")
        cache = sampler.cache
        print(f"turn {turn}/{limit} live {live} t={time.perf_counter() - t0:.0f}s rss={rss_gb():.2f}GB "
              f"live_arrays={sum(a.nbytes for a in jax.live_arrays()) / 1e9:.2f}GB "
              f"cache_held={(cache.bytes_held if cache is not None else 0) / 1e9:.2f}GB "
              f"prefilled={sampler.stats.prefilled_tokens} generated={sampler.stats.generated_tokens}", flush=True)
        print(f"  programs {compile_counts()}; xla compiles {len(compiles)} ({sum(compiles):.1f} s)", flush=True)

    runner.run_group(plan_episodes(cfg), on_turn=on_turn)
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
