"""Benchmark: decode at agent context lengths, keys-first decode scores vs the plain form, side by side.

    PYTHONPATH=. python scripts/bench_long_decode.py                       # attention, then agent turns
    PYTHONPATH=. python scripts/bench_long_decode.py --skip-turns --keys 1024 4096 8192

Both parts run each form in this one process, so machine noise hits both alike (a benchmark, not a test).
  1. attention: one layer's decode attention (`models.llama._grouped_attention_block`, float32, SmolLM2's
     9 query / 3 KV heads of 64) for `--rows` rows against each of `--keys` cached slots, plain vs
     keys-first (`key_rows=True`), best of 3 x 20 calls; and a plain sum over the same K and V (the
     bandwidth bound);
  2. turns: the bundled model's `Sampler` with the prefix cache, `--rows` prompts of `--context` random
     tokens, then `--turns` agent-like turns (each prompt grows by its completion and 48 tokens, so a turn
     prefills ~112 tokens on top of its cached prefix and decodes `--new-tokens`); EOS is off. The first
     turn may compile; the report gives the median wall of the later ones. The plain form is
     `KEY_ROWS_MAX_QUERIES = 0` (compiled programs are dropped between the forms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def _best_ms(fn, *args, calls: int = 20) -> float:
    import jax

    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t0) / calls * 1e3)
    return best


def bench_attention(rows: int, keys: list[int]) -> None:
    import jax
    import jax.numpy as jnp

    from agentrm_jax.models.llama import _grouped_attention_block

    heads, kv_heads, head_dim = 9, 3, 64
    print(f"attention, one layer, {rows} rows x 1 query token, {heads}/{kv_heads} heads of {head_dim}:")
    for s in keys:
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        q = jax.random.normal(k1, (rows, 1, heads, head_dim))
        k = jax.random.normal(k2, (rows, kv_heads, s, head_dim))
        v = jax.random.normal(k3, (rows, kv_heads, s, head_dim))
        allowed = jnp.ones((rows, 1, s), bool)
        plain = _best_ms(lambda *a: _grouped_attention_block(*a), q, k, v, allowed)
        first = _best_ms(lambda *a: _grouped_attention_block(*a, key_rows=True), q, k, v, allowed)
        stream = _best_ms(lambda k, v: jnp.sum(k) + jnp.sum(v), k, v)
        mb = 2 * k.size * 4 / 2**20
        print(f"  {s:6d} keys ({mb:5.0f} MiB of K+V): plain {plain:6.2f} ms, keys-first {first:6.2f} ms "
              f"({plain / first:.2f}x); a plain sum over K and V {stream:5.2f} ms", flush=True)


def bench_turns(rows: int, context: int, new_tokens: int, turns: int) -> None:
    import jax
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_models import _IdsOnlyTokenizer

    from agentrm_jax.models import bundled_model_path, from_pretrained
    from agentrm_jax.models import llama
    from agentrm_jax.sampling import Sampler

    model, _ = from_pretrained(bundled_model_path(), dtype="float32")
    limit = llama.KEY_ROWS_MAX_QUERIES
    print(f"agent turns, bundled model, {rows} rows from {context} tokens, {new_tokens} new tokens a turn, "
          f"prefix cache on:")
    for label, max_queries in (("plain", 0), ("keys-first", limit)):
        llama.KEY_ROWS_MAX_QUERIES = max_queries
        jax.clear_caches()
        rng = np.random.default_rng(0)
        sampler = Sampler(model, _IdsOnlyTokenizer(), max_batch=rows, prefix_cache=True, kv_cache_mb=6000)
        sampler.eos_ids = np.asarray([-1], np.int32)
        prompts = [rng.integers(100, model.config.vocab_size, context).tolist() for _ in range(rows)]
        t0 = time.perf_counter()
        out = sampler.generate_ids(prompts, max_new_tokens=new_tokens)
        walls = []
        first_call = time.perf_counter() - t0
        for _ in range(turns):
            prompts = [p + list(o[0].token_ids) + rng.integers(100, model.config.vocab_size, 48).tolist()
                       for p, o in zip(prompts, out)]
            t0 = time.perf_counter()
            out = sampler.generate_ids(prompts, max_new_tokens=new_tokens)
            walls.append(time.perf_counter() - t0)
        later = statistics.median(walls[1:]) if len(walls) > 1 else walls[0]
        print(f"  {label:10s}: first call {first_call:6.1f} s; turns {', '.join(f'{w:.1f}' for w in walls)} s; "
              f"median after the first {later:.2f} s ({later / new_tokens * 1e3:.0f} ms a decode step, "
              f"prefill included), contexts up to {len(prompts[0])} tokens", flush=True)
    llama.KEY_ROWS_MAX_QUERIES = limit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--rows", type=int, default=8, help="decode rows (default 8, the policy's max_batch)")
    p.add_argument("--keys", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="cached slots (attention)")
    p.add_argument("--context", type=int, default=2048, help="tokens of each prompt before the first turn")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens decoded a turn")
    p.add_argument("--turns", type=int, default=4, help="turns per form after the first call")
    p.add_argument("--skip-attention", action="store_true")
    p.add_argument("--skip-turns", action="store_true")
    args = p.parse_args(argv)
    import jax

    print(f"jax {jax.__version__} ({jax.default_backend()}), {len(jax.devices())} device(s)", flush=True)
    if jax.default_backend() != "cpu":
        print("note: keys-first scores are a CPU path; on this backend both forms run the plain one")
    if not args.skip_attention:
        bench_attention(args.rows, args.keys)
    if not args.skip_turns:
        bench_turns(args.rows, args.context, args.new_tokens, args.turns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
