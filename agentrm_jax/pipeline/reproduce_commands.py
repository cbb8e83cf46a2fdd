"""`agentrm reproduce`: the paper's tables at our scale, one resumable stage at a time.

    agentrm reproduce --config configs/reproduce_mini.yaml [--out runs/reproduce] [--fresh] [--plan]

The top level imports the standard library only, so `agentrm --help` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

__all__ = ["register"]

_DESCRIPTION = """\
Reproduces AgentRM's experiments (arXiv 2502.18407) at our scale, every part a cached stage under --out:

  demos, sft, sft_<family>       expert demos of the held-in families; the SFT policy on all of them and
                                 one per family alone (the transfer study)
  explore, samples               MCTS trees per held-in family -> (state, value) records
  rm_explicit, rm_implicit,      the explicit RM, the implicit PRM, one explicit RM per family alone
  rm_<family>                    (the LLM judge needs no training)
  table1, table2                 base / SFT policy: greedy, Best-of-N (explicit, implicit, judge; random
                                 pick and oracle pass@N from the same samples), beam (explicit)
  transfer                       policy FT vs RM FT per family, on every family (two heat maps)
  weak_to_strong, scaling,       the RM guiding a larger policy; N = 1..16 and beam widths; paraphrased
  robustness                     held-in families
  report                         OUT/report/results.md: every table, the PNGs, a Reading of each claim

Each eval stage appends one row per episode, so a kill loses at most the episodes in flight; a rerun
skips finished stages and says so, a stage made with another config is refused (--redo-changed
recomputes it and the stages below it, --fresh every stage).
Hours on a 2-core CPU at the mini config's sizes (docs/RESULTS.md, "Reproduction"); the same config
runs unchanged on a GPU. --plan prints what would run without running it."""


def _cmd_reproduce(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from agentrm_jax.pipeline.reproduce import reproduce_stages
    from agentrm_jax.pipeline.reproduce_config import ReproduceConfig
    from agentrm_jax.pipeline.stages import plan_stages, run_stages

    cfg = ReproduceConfig.from_yaml(args.config)
    command = " ".join(["agentrm", "reproduce", "--config", shlex.quote(str(args.config)), "--out",
                        shlex.quote(str(args.out)), *(["--fresh"] if args.fresh else [])])
    stages = reproduce_stages(cfg, command=command)
    if args.plan:
        for plan in plan_stages(stages, args.out, pipeline="reproduce"):
            needs = f" (needs {', '.join(plan.stage.needs)})" if plan.stage.needs else ""
            print(f"{plan.action:>6}  {plan.stage.name}{needs}")
        return 0
    cfg.check_models()
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()
    print(f"reproduce: {len(stages)} stages from {args.config} (sha256 {cfg.sha256[:12]}) -> {args.out}",
          file=sys.stderr, flush=True)
    run_stages(stages, args.out, fresh=args.fresh, redo_changed=args.redo_changed, pipeline="reproduce")
    print(f"reproduce: done in {time.perf_counter() - t0:.0f} s; {Path(args.out) / 'report' / 'results.md'}",
          file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `reproduce` to the `agentrm` command."""
    cmd = subparsers.add_parser("reproduce", help="the paper's tables at our scale: a resumable stage pipeline",
                                description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_argument("--config", default="configs/reproduce_mini.yaml",
                     help="reproduce config (default configs/reproduce_mini.yaml; its comments say which choices are "
                          "the paper's and which ours)")
    cmd.add_argument("--out", default="runs/reproduce", help="directory of the stages' outputs (default runs/reproduce)")
    cmd.add_argument("--fresh", action="store_true", help="delete the stages' outputs under --out and recompute")
    cmd.add_argument("--redo-changed", action="store_true",
                      help="recompute only the stages made with another config and those below them; keep the rest")
    cmd.add_argument("--plan", action="store_true", help="print each stage's action (run / resume / skip) and stop")
    cmd.set_defaults(func=_cmd_reproduce)
