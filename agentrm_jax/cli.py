"""The `agentrm` command.

    agentrm generate --prompt "..."      sample from the bundled SmolLM2 (or --model PATH)
    agentrm bench models|rewards|train   ours vs transformers+torch (forward, decode; RM scoring; RM train step)
    agentrm score --rm DIR --input T.jsonl --output S.jsonl     score trajectories with a reward model
    agentrm serve / agentrm play         OpenAI-compatible server for our model; play an env episode
    agentrm eval --config C.yaml / agentrm report R.jsonl   search methods x envs x seeds; table + scaling plots
    agentrm train --config C.yaml / agentrm export --ckpt RUN --out DIR   train a reward model; export it for transformers

Subcommands beyond generate/bench live next to their code and are added by
the `register(subparsers)` of each module in `_COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _cmd_generate(args: argparse.Namespace) -> int:
    from agentrm_jax.models import bundled_model_path, from_pretrained
    from agentrm_jax.sampling import Sampler

    if args.max_new_tokens <= 0:  # checked before the (slow) model load
        raise ValueError(f"--max-new-tokens must be positive, got {args.max_new_tokens} (max_new_tokens)")
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    if args.model is None:  # the bundled model's window is known without loading it
        from agentrm_jax.models.bundled import BUNDLED_CONTEXT_LENGTH
        from agentrm_jax.sampling.sampler import check_max_new_tokens

        check_max_new_tokens(args.max_new_tokens, BUNDLED_CONTEXT_LENGTH)
    path = args.model or bundled_model_path()
    t0 = time.perf_counter()
    model, tokenizer = from_pretrained(path, dtype=args.dtype)
    t_load = time.perf_counter() - t0
    prompt = args.prompt if args.raw else [{"role": "user", "content": args.prompt}]
    sampler = Sampler(model, tokenizer)
    t0 = time.perf_counter()
    rows = sampler.generate([prompt], max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, top_k=args.top_k, n=args.n, stop=tuple(args.stop), seed=args.seed)
    t_gen = time.perf_counter() - t0
    for i, completion in enumerate(rows[0]):
        if args.n > 1:
            print(f"--- sample {i} ({completion.finish_reason}) ---")
        print(completion.text)
    tokens = sampler.stats.generated_tokens + sampler.stats.discarded_tokens  # decoded, kept or cut at a stop
    print(f"[{tokens} tokens decoded in {t_gen:.2f} s ({tokens / t_gen:.1f} tokens/s, compile included); "
          f"model loaded in {t_load:.2f} s from {path}]", file=sys.stderr)
    return 0


_COMMAND_MODULES = ("agentrm_jax.rewards.commands", "agentrm_jax.agents.commands",
                    "agentrm_jax.evaluate.commands", "agentrm_jax.training.commands", "agentrm_jax.envs.commands",
                    "agentrm_jax.explore.commands", "agentrm_jax.sft.commands",
                    "agentrm_jax.pipeline.commands", "agentrm_jax.pipeline.reproduce_commands")
_BENCHMARKS = {"models": "bench_models.py", "rewards": "bench_rewards.py", "train": "bench_train.py",
               "episodes": "bench_episodes.py"}


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what not in _BENCHMARKS:
        raise SystemExit(f"unknown benchmark {args.what!r}; available: {', '.join(_BENCHMARKS)}")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / _BENCHMARKS[args.what]
    if not script.exists():
        raise SystemExit(f"{script} not found: `agentrm bench` runs from a source checkout")
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentrm",
        description="agentrm_jax: reward models that guide LLM agents (AgentRM, arXiv 2502.18407), in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="sample a completion from a model (default: bundled SmolLM2-135M)",
                         description="Sample completions with the jitted KV-cache sampler. The prompt is sent "
                                     "as one user turn through the model's chat template unless --raw.")
    gen.add_argument("--prompt", required=True, help="the user message (or raw text with --raw)")
    gen.add_argument("--model", default=None,
                     help="HF model directory (config.json + *.safetensors) or .gguf file; "
                          "default: the bundled SmolLM2-135M-Instruct GGUF")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default 64)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    gen.add_argument("-n", type=int, default=1, help="completions to sample (they share one prefill)")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    gen.add_argument("--raw", action="store_true", help="use the prompt verbatim, without the chat template")
    gen.set_defaults(func=_cmd_generate)

    bench = sub.add_parser("bench", help="benchmarks: `agentrm bench models|rewards|train [options]`",
                           description="Runs scripts/bench_models.py (forward and decode) or "
                                       "scripts/bench_rewards.py (RM scoring throughput) or "
                                       "scripts/bench_train.py (RM train step; FSDP bytes per device): ours vs "
                                       "transformers+torch on the same CPU, in one run. Options after the "
                                       "benchmark name go to that script (e.g. --repeats 5 --json out.json); "
                                       "`agentrm bench models --help` lists them.")
    bench.add_argument("what", choices=sorted(_BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark script")
    bench.set_defaults(func=_cmd_bench)

    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers advises at import that it found no torch ("Models won't be available"): true of its
    # torch models, which we never use, and alarming on a machine with README command 1's install only.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"agentrm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a directory given for a file, no permission, a full disk: the user's to fix
        where = f"{err.filename}: " if err.filename else ""
        print(f"agentrm {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
