"""`agentrm collect` (expert demonstrations) and `agentrm sft` (policy fine-tuning on them)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _cmd_collect(args: argparse.Namespace) -> int:
    from agentrm_jax.agents.collect import collect
    from agentrm_jax.agents.seeds import parse_seeds

    if args.policy != "expert":
        raise ValueError(f"--policy {args.policy!r}: collect plays the env's expert only (--policy expert)")
    seeds = parse_seeds(args.seeds, what="--seeds")
    report = collect(args.envs, seeds=seeds, out=args.out, split=args.split, noise=args.noise,
                     noise_seed=args.noise_seed, progress=not args.no_progress, max_turns=args.max_turns)
    failed = f"; {report.failed} demos did not succeed ({', '.join(report.failed_ids[:5])}" \
             f"{', ...' if report.failed > 5 else ''})" if report.failed else ""
    print(f"collect: wrote {report.written} episodes to {report.out} ({report.skipped} already there){failed}",
          file=sys.stderr)
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    from agentrm_jax.sft.config import read_sft_config
    from agentrm_jax.training.commands import RUN_OVERRIDES, overrides_from_args

    overrides = overrides_from_args(args, {**RUN_OVERRIDES, "eval_every": "eval_every"})
    sft_overrides = {"tasks": [args.per_task] if args.per_task else None, "eval_envs": args.eval_envs,
                     "eval_seeds": args.eval_seeds}
    config, sft = read_sft_config(args.config, overrides, sft_overrides)
    from agentrm_jax.sft.run import run_sft
    from agentrm_jax.training.commands import summary
    from agentrm_jax.training.trainer import NonFiniteError

    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()
    try:
        result = run_sft(config, sft, progress=not args.no_progress, overwrite=args.overwrite)
    except NonFiniteError as e:
        print(f"agentrm sft: {e}", file=sys.stderr)
        return 3
    print(f"sft: {summary(result)}; the policy is {result.out}/policy (play it with `agentrm play --policy "
          f"{result.out}`; export with `agentrm export --ckpt {result.out} --out {result.out}/hf`)", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `collect` and `sft` to the `agentrm` command."""
    sf = subparsers.add_parser(
        "sft", help="fine-tune a policy on expert demos (multi-turn chat SFT, LoRA or full)",
        description="Supervised fine-tuning of the policy on demos from `agentrm collect`: one chat sequence per "
                    "demo through the tokenizer's chat template, loss on the assistant replies only, trained by "
                    "the same machinery as `agentrm train` (mesh, grain, AdamW, orbax checkpoints with resume, "
                    "metrics.jsonl). Greedy episodes of sft.eval_envs are played at each eval point. The run "
                    "directory ends with policy/, which --policy RUN_DIR loads in play, eval and explore. Flags "
                    "override the config (configs/sft_cpu.yaml).")
    from agentrm_jax.training.commands import add_run_flags

    sf.add_argument("--config", required=True, help="YAML sft config (a train config plus an sft: section)")
    add_run_flags(sf, data_help="demos, JSONL (overrides data.train)",
                  eval_data_help="held-out demos for eval_loss (overrides data.eval)", finetune_choices=("lora", "full"))
    sf.add_argument("--per-task", metavar="ENV", help="train on this env's demos only (overrides sft.tasks)")
    sf.add_argument("--eval-envs", nargs="+", help="envs to play at eval points (overrides sft.eval_envs)")
    sf.add_argument("--eval-seeds", type=int, help="test seeds per eval env (overrides sft.eval_seeds)")
    sf.add_argument("--eval-every", type=int, help="evaluate (eval_loss, episodes) every N steps (overrides "
                                                   "outputs.eval_every)")
    sf.set_defaults(func=_cmd_sft)

    co = subparsers.add_parser(
        "collect", help="expert demonstrations (trajectories with thoughts) for policy SFT",
        description="Play the env's expert on every (env, seed) and append one trajectory per episode to "
                    "--out, each step with a thought that says why its action (agents/thoughts.py). With "
                    "--noise P a step deviates at random with probability P where the expert still recovers "
                    "(the deviations are marked in meta.noisy_steps and are not SFT targets). Rerunning resumes: "
                    "episodes already in --out are skipped, never written twice. Example: agentrm collect "
                    "--policy expert --envs maze shop --split train --seeds 0-199 --out demos.jsonl")
    co.add_argument("--policy", default="expert", help="only 'expert' (the env's own solver or walkthrough)")
    co.add_argument("--envs", nargs="+", required=True, help="registered env names, e.g. maze shop twx sciworld")
    co.add_argument("--split", default="train", choices=["train", "test"])
    co.add_argument("--seeds", default="0-199", help="task seeds: N, N-M (inclusive) or a comma list (default 0-199)")
    co.add_argument("--out", required=True, help="JSONL file of trajectories (appended to; resumed)")
    co.add_argument("--noise", type=float, default=0.0, help="probability of a recoverable random step (default 0)")
    co.add_argument("--noise-seed", type=int, default=0, help="seed of the noise draws (part of the record id)")
    co.add_argument("--max-turns", type=int, help="turn limit (default: each env's own)")
    co.add_argument("--no-progress", action="store_true", help="no progress bar")
    co.set_defaults(func=_cmd_collect)
