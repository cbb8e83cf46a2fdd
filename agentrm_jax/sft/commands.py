"""`agentrm collect` (expert demonstrations) and `agentrm sft` (policy fine-tuning on them)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _cmd_collect(args: argparse.Namespace) -> int:
    from agentrm_jax.agents.collect import collect, parse_seeds

    if args.policy != "expert":
        raise ValueError(f"--policy {args.policy!r}: collect plays the env's expert only (--policy expert)")
    seeds = parse_seeds(args.seeds)
    report = collect(args.envs, seeds=seeds, out=args.out, split=args.split, noise=args.noise,
                     noise_seed=args.noise_seed, progress=not args.no_progress, max_turns=args.max_turns)
    failed = f"; {report.failed} demos did not succeed ({', '.join(report.failed_ids[:5])}" \
             f"{', ...' if report.failed > 5 else ''})" if report.failed else ""
    print(f"collect: wrote {report.written} episodes to {report.out} ({report.skipped} already there){failed}",
          file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `collect` to the `agentrm` command."""
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
