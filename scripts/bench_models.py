"""Benchmark: our Flax NNX Llama vs transformers+torch on this machine (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_models.py                     # 8 x 256 forward + decode
    PYTHONPATH=. python scripts/bench_models.py --repeats 5 --skip-decode
    agentrm bench models --skip-torch --json out.json               # same, through the CLI

What it measures, in one process so machine noise hits both sides alike:
  1. matmul peak: GFLOP/s of one float32 [n, n] @ [n, n] product (n = 2048), jax and torch;
  2. forward: tokens/s of a full forward (logits for every position) on one random
     [batch, length] token batch, float32, both models holding the same weights
     (ours converted into transformers' `LlamaForCausalLM` with `to_hf_state_dict`);
     the max |logit difference| is printed as a sanity check;
  3. decode: tokens/s of greedy generation of `new_tokens` tokens for `batch` random
     prompts of `prompt_length` tokens, ours (`agentrm_jax.sampling`) vs transformers'
     `generate`; EOS is disabled on both sides so both produce exactly `new_tokens` tokens;
  4. with --batch-sweep: our decode's aggregate tokens/s at several batch sizes (prompts that
     share `--shared-prefix` tokens, as an agent's contexts do), to choose a policy's max_batch.

Timings exclude the first (compiling / warming) call and report the best and the median
of `repeats` calls. Ours is timed as a `jax.jit` of a pure function of the split NNX state
(`nnx.split` once, `nnx.merge` inside the jit), so no NNX graph traversal is timed.

FLOPs per token of a forward (multiply-add = 2 FLOPs), used for "fraction of peak":
    2 * (non-embedding parameters)                  q/k/v/o + gate/up/down projections
  + 2 * vocab * hidden                              LM head
  + num_layers * 4 * length * num_heads * head_dim  scores QK^T and probs @ V over all
                                                    `length` keys (both implementations
                                                    compute the full square, masked)
Norms, RoPE, softmax and the embedding gather are not counted.

Threads: torch uses `--threads` intra-op threads. XLA:CPU sizes its pool from the cores
the process may run on; to give jax fewer, run under `taskset -c 0-N` (a warning says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

DEFAULTS = dict(batch=8, length=256, new_tokens=64, prompt_length=64, repeats=3, threads=2, matmul_size=2048,
                seed=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_models.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="sequences per forward / decode batch")
    p.add_argument("--length", type=int, default=DEFAULTS["length"], help="tokens per sequence in the forward")
    p.add_argument("--new-tokens", type=int, default=DEFAULTS["new_tokens"], help="tokens generated per row")
    p.add_argument("--prompt-length", type=int, default=DEFAULTS["prompt_length"], help="decode prompt tokens")
    p.add_argument("--repeats", type=int, default=DEFAULTS["repeats"], help="timed calls per measurement")
    p.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="torch intra-op threads")
    p.add_argument("--matmul-size", type=int, default=DEFAULTS["matmul_size"], help="n of the n^3 matmul")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the random token batch")
    p.add_argument("--model", default=None, help="HF directory or .gguf (default: the bundled SmolLM2-135M)")
    p.add_argument("--random-init", action="store_true",
                   help="random SmolLM2-135M-shaped weights instead of loading a checkpoint")
    p.add_argument("--skip-torch", action="store_true", help="only measure ours")
    p.add_argument("--skip-matmul", action="store_true")
    p.add_argument("--skip-forward", action="store_true")
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--batch-sweep", default=None, metavar="B,B,...",
                   help="also time our decode at these batch sizes (aggregate tokens/s; ours only), e.g. 8,16,32,64")
    p.add_argument("--shared-prefix", type=int, default=0,
                   help="tokens every prompt of the sweep starts with (an agent's system prompt + example)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    return p


# ---------------------------------------------------------------------------- helpers

def _time(fn: Callable[[], Any], repeats: int, *, sync: Callable[[Any], Any] = lambda x: x) -> dict:
    """Calls fn once untimed (compile / warm-up), then `repeats` timed calls."""
    t0 = time.perf_counter()
    sync(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "best_s": min(times), "median_s": statistics.median(times), "times_s": times}


def forward_flops_per_token(config, length: int) -> float:
    """Multiply-add FLOPs per token of a full forward at `length` (formula in the module docstring)."""
    d, v = config.hidden_size, config.vocab_size
    emb = v * d * (1 if config.tie_word_embeddings else 2)
    non_embedding = config.num_params() - emb - d  # minus the final norm too (not a matmul)
    norms = config.num_layers * 2 * d
    attention = config.num_layers * 4 * length * config.num_heads * config.head_dim
    return 2.0 * (non_embedding - norms) + 2.0 * v * d + attention


def _say(*parts):
    print(*parts, flush=True)


# ---------------------------------------------------------------------------- sections

def bench_matmul(args, torch) -> dict:
    import jax
    import jax.numpy as jnp

    n = args.matmul_size
    flops = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), np.float32)
    b = rng.standard_normal((n, n), np.float32)
    out = {}
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    t = _time(lambda: mm(ja, jb), args.repeats, sync=jax.block_until_ready)
    out["jax_gflops"] = flops / t["best_s"] / 1e9
    _say(f"matmul {n}^3 float32  jax   {out['jax_gflops']:7.1f} GFLOP/s")
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        with torch.inference_mode():
            t = _time(lambda: ta @ tb, args.repeats)
        out["torch_gflops"] = flops / t["best_s"] / 1e9
        _say(f"matmul {n}^3 float32  torch {out['torch_gflops']:7.1f} GFLOP/s")
    return out


def build_models(args, torch):
    """(ours, hf_or_None, source string)."""
    from agentrm_jax.models import ModelConfig, init_model, load_model

    model, source = None, None
    if not args.random_init:
        try:
            if args.model:
                path = args.model
            else:
                from agentrm_jax.models import bundled_model_path
                path = bundled_model_path()
            t0 = time.perf_counter()
            model = load_model(path)
            source = f"{path} ({time.perf_counter() - t0:.1f} s to load)"
        except (ImportError, FileNotFoundError) as e:  # e.g. the GGUF reader not there yet
            if args.model:
                raise
            _say(f"[bench] could not load the bundled model ({type(e).__name__}: {e}); using random init "
                 "(weights do not change speed)")
    if model is None:
        model = init_model(ModelConfig.smollm2_135m(), seed=0)
        source = "random init, SmolLM2-135M shapes"
    hf = None
    if torch is not None:
        from transformers import LlamaConfig, LlamaForCausalLM

        from agentrm_jax.models import to_hf_state_dict

        if model.config.model_type != "llama":
            raise SystemExit(f"the torch side builds LlamaForCausalLM; model_type={model.config.model_type!r}")
        hf = LlamaForCausalLM(LlamaConfig(**model.config.to_hf_config())).to(torch.float32).eval()
        state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in to_hf_state_dict(model).items()}
        missing, unexpected = hf.load_state_dict(state, strict=False)
        missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"weight transfer to torch failed: missing {missing}, unexpected {unexpected}")
        if model.config.tie_word_embeddings:
            hf.tie_weights()
    return model, hf, source


def bench_forward(args, model, hf, torch, peak_gflops: float | None) -> dict:
    import jax
    from flax import nnx

    cfg = model.config
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, cfg.vocab_size, (args.batch, args.length)).astype(np.int32)
    mask = np.ones_like(ids)
    tokens = args.batch * args.length
    out: dict[str, Any] = {"tokens_per_call": tokens}

    graphdef, state = nnx.split(model)  # once: the timed calls do no graph traversal

    @jax.jit
    def forward(state, ids, mask):
        return nnx.merge(graphdef, state)(ids, mask)

    jids, jmask = jax.numpy.asarray(ids), jax.numpy.asarray(mask)
    t = _time(lambda: forward(state, jids, jmask), args.repeats, sync=jax.block_until_ready)
    out["ours"] = {"tokens_per_s": tokens / t["best_s"], "median_tokens_per_s": tokens / t["median_s"],
                   "compile_and_first_s": t["first_s"]}
    flops = forward_flops_per_token(cfg, args.length)
    out["flops_per_token"] = flops
    _say(f"forward {args.batch}x{args.length}  ours  {out['ours']['tokens_per_s']:7.1f} tok/s "
         f"(median {out['ours']['median_tokens_per_s']:.1f}; compile+first call {t['first_s']:.1f} s)")
    if peak_gflops:
        out["ours"]["fraction_of_jax_peak"] = out["ours"]["tokens_per_s"] * flops / (peak_gflops * 1e9)
        _say(f"  {flops / 1e6:.0f} MFLOP/token -> {out['ours']['fraction_of_jax_peak']:.0%} of the jax matmul "
             f"peak; peak-bound limit {peak_gflops * 1e9 / flops:.0f} tok/s")
    if hf is not None:
        tids, tmask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

        def torch_forward():
            with torch.inference_mode():
                return hf(input_ids=tids, attention_mask=tmask).logits

        t = _time(torch_forward, args.repeats)
        out["torch"] = {"tokens_per_s": tokens / t["best_s"], "median_tokens_per_s": tokens / t["median_s"],
                        "attn_implementation": getattr(hf.config, "_attn_implementation", None)}
        out["ratio_ours_over_torch"] = out["ours"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
        ours_logits = np.asarray(forward(state, jids, jmask))
        torch_logits = torch_forward().numpy()
        out["max_abs_logit_diff"] = float(np.abs(ours_logits - torch_logits).max())
        out["argmax_agreement"] = float((ours_logits.argmax(-1) == torch_logits.argmax(-1)).mean())
        _say(f"forward {args.batch}x{args.length}  torch {out['torch']['tokens_per_s']:7.1f} tok/s "
             f"(median {out['torch']['median_tokens_per_s']:.1f}; attention {out['torch']['attn_implementation']})")
        _say(f"  ours/torch {out['ratio_ours_over_torch']:.2f}x; max |logit diff| {out['max_abs_logit_diff']:.2e}, "
             f"argmax agreement {out['argmax_agreement']:.1%}")
    return out


class _IdsOnlyTokenizer:
    """Enough of a tokenizer for timing `Sampler.generate_ids` without the real one."""

    eos_token_id = None
    pad_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return ""


def bench_decode(args, model, hf, torch) -> dict:
    try:
        from agentrm_jax.sampling import Sampler
    except ImportError as e:
        _say(f"decode: skipped, agentrm_jax.sampling is not importable ({e})")
        return {"skipped": str(e)}
    cfg = model.config
    rng = np.random.default_rng(args.seed + 1)
    # Avoid special ids (EOS/BOS/pad are small ids in SmolLM2's vocabulary).
    prompts = rng.integers(100, cfg.vocab_size, (args.batch, args.prompt_length)).astype(np.int32)
    generated = args.batch * args.new_tokens
    out: dict[str, Any] = {"tokens_per_call": generated}

    sampler = Sampler(model, _IdsOnlyTokenizer(), max_batch=args.batch)
    # EOS off, so every row runs the full new_tokens (matches transformers' min_new_tokens below).
    sampler.eos_ids = np.asarray([-1], np.int32)

    def ours():
        before = sampler.stats.generated_tokens
        sampler.generate_ids(prompts.tolist(), max_new_tokens=args.new_tokens, temperature=0.0)
        return sampler.stats.generated_tokens - before

    t = _time(ours, args.repeats)
    made = ours()
    if made != generated:
        _say(f"  note: ours generated {made} tokens, expected {generated}")
    out["ours"] = {"tokens_per_s": generated / t["best_s"], "median_tokens_per_s": generated / t["median_s"],
                   "compile_and_first_s": t["first_s"]}
    _say(f"decode {args.batch} x {args.new_tokens} new (prompt {args.prompt_length})  ours  "
         f"{out['ours']['tokens_per_s']:7.1f} tok/s (median {out['ours']['median_tokens_per_s']:.1f}; "
         f"first call {t['first_s']:.1f} s)")
    if hf is not None:
        tids = torch.from_numpy(prompts).long()
        tmask = torch.ones_like(tids)

        def theirs():
            with torch.inference_mode():
                return hf.generate(input_ids=tids, attention_mask=tmask, max_new_tokens=args.new_tokens,
                                   min_new_tokens=args.new_tokens, do_sample=False,
                                   pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else 0)

        t = _time(theirs, args.repeats)
        out["torch"] = {"tokens_per_s": generated / t["best_s"], "median_tokens_per_s": generated / t["median_s"]}
        out["ratio_ours_over_torch"] = out["ours"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
        _say(f"decode {args.batch} x {args.new_tokens} new (prompt {args.prompt_length})  torch "
             f"{out['torch']['tokens_per_s']:7.1f} tok/s (median {out['torch']['median_tokens_per_s']:.1f}); "
             f"ours/torch {out['ratio_ours_over_torch']:.2f}x")
    return out


def bench_batch_sweep(args, model) -> dict:
    """Our decode's aggregate tokens/s against rows per call: each prompt is `--shared-prefix` common
    tokens + `--prompt-length` of its own, `--new-tokens` generated (EOS off). Rows per decode step
    cost little more than one row while the step streams the weights, so throughput grows with them."""
    from agentrm_jax.sampling import Sampler

    sizes = [int(b) for b in args.batch_sweep.split(",") if b.strip()]
    rng = np.random.default_rng(args.seed + 2)
    vocab = model.config.vocab_size
    common = rng.integers(100, vocab, args.shared_prefix).tolist()
    out = {"shared_prefix": args.shared_prefix, "prompt_length": args.prompt_length, "new_tokens": args.new_tokens,
           "batches": {}}
    for b in sizes:
        prompts = [common + rng.integers(100, vocab, args.prompt_length).tolist() for _ in range(b)]
        sampler = Sampler(model, _IdsOnlyTokenizer(), max_batch=b)
        sampler.eos_ids = np.asarray([-1], np.int32)
        call = lambda: sampler.generate_ids(prompts, max_new_tokens=args.new_tokens, temperature=0.0)
        prefill = lambda: sampler.generate_ids(prompts, max_new_tokens=1, temperature=0.0)
        t = _time(call, args.repeats)
        p = _time(prefill, args.repeats)
        step_ms = max(t["best_s"] - p["best_s"], 0.0) / max(args.new_tokens - 1, 1) * 1e3
        row = {"tokens_per_s": b * args.new_tokens / t["best_s"], "call_s": t["best_s"], "prefill_s": p["best_s"],
               "decode_step_ms": step_ms}
        out["batches"][b] = row
        _say(f"sweep batch {b:3d}: {row['tokens_per_s']:7.1f} tok/s aggregate, call {t['best_s']:.2f} s "
             f"(prefill {p['best_s']:.2f} s), decode step {step_ms:.1f} ms")
    return out


# ---------------------------------------------------------------------------- entry points

def run(args: argparse.Namespace) -> dict:
    """Runs the selected sections; returns every figure as a JSON-able dict."""
    import jax

    torch = None
    if not args.skip_torch:
        import torch  # noqa: F811  (optional: only the comparison needs it)

        torch.set_num_threads(args.threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result: dict[str, Any] = {"args": vars(args), "machine": {
        "cores_visible": cores, "jax": jax.__version__, "jax_backend": jax.default_backend(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", "")}}
    _say(f"[bench] jax {jax.__version__} ({jax.default_backend()}), "
         f"torch {result['machine']['torch']} ({args.threads} threads), {cores} cores visible")
    if cores != args.threads:
        _say(f"[bench] warning: XLA:CPU uses all {cores} visible cores; run under `taskset -c 0-{args.threads - 1}` "
             f"to give jax {args.threads}")

    peak = None
    if not args.skip_matmul:
        result["matmul"] = bench_matmul(args, torch)
        peak = result["matmul"]["jax_gflops"]
    if not (args.skip_forward and args.skip_decode):
        model, hf, source = build_models(args, torch)
        result["model"] = source
        _say(f"[bench] model: {source}")
        if not args.skip_forward:
            result["forward"] = bench_forward(args, model, hf, torch, peak)
        if not args.skip_decode:
            result["decode"] = bench_decode(args, model, hf, torch)
    if args.batch_sweep:
        if "model" not in result:
            model, _, result["model"] = build_models(args, None)
        result["batch_sweep"] = bench_batch_sweep(args, model)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
