"""`agentrm demo`: the whole AgentRM pipeline in miniature, offline, on the bundled model.

    agentrm demo [--out runs/demo] [--quick] [--fresh | --redo-changed] [--config configs/demo.yaml]

The top level imports the standard library only, so `agentrm --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["register"]

_DESCRIPTION = """\
Runs the AgentRM pipeline end to end on the bundled SmolLM2-135M-Instruct, offline, on CPU:

  1 demos    expert demonstrations of held-in shop train tasks (agentrm collect)
  2 sft      a short LoRA SFT of the bundled model on them: the demo's policy (agentrm sft)
  3 explore  MCTS trees of a few shop train tasks (agentrm explore; with the noisy expert by default,
             and the demo says why)
  4 samples  the trees' states with their MCTS values as regression records (agentrm samples)
  5 rm       an explicit RM (value head on the bundled backbone) trained on them (agentrm train)
  6 eval     the SFT policy on held-in and held-out test seeds: greedy, Best-of-N with the RM (and
             random pick from the same samples), beam search with the RM; one row per episode (agentrm eval)
  7 report   the table printed, results.md and the scaling PNG (agentrm report), and whether the RM
             beat random pick on the held-out seeds

Each stage writes OUT/<stage>/ and is cached: a rerun skips every finished stage and says so, an
interrupted one resumes, a stage made with another config is refused (--redo-changed recomputes it
and the stages below it, --fresh every stage). The full demo takes about 15 minutes on 2 CPU cores,
--quick about 5 (tiny sizes, every stage still real).
At this size the numbers show the machinery working, not the paper's gains: see docs/RESULTS.md."""


def _config_path(given: str | None) -> Path:
    """--config, or configs/demo.yaml of the working directory, else of the source checkout."""
    if given is not None:
        return Path(given)
    here = Path("configs/demo.yaml")
    return here if here.is_file() else Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"



def _cmd_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    print(f"demo: {'quick sizes' if args.quick else 'full sizes'} from {_config_path(args.config)} -> {args.out} "
          f"(the first stage starts after a few seconds of imports)", file=sys.stderr, flush=True)
    from agentrm_jax.pipeline.demo import demo_stages, next_steps
    from agentrm_jax.pipeline.demo_config import DemoConfig
    from agentrm_jax.pipeline.stages import run_stages

    cfg = DemoConfig.from_yaml(_config_path(args.config), quick=args.quick)
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache

    use_persistent_compile_cache()  # most of a cold demo is compiling; a second demo loads the programs
    run_stages(demo_stages(cfg), args.out, fresh=args.fresh, redo_changed=args.redo_changed, pipeline="demo")
    out = Path(args.out)
    print(f"demo: done in {time.perf_counter() - t0:.0f} s; results in {out / 'report' / 'results.md'}. Next:",
          file=sys.stderr)
    for line in next_steps(out):
        print(f"  {line}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `demo` to the `agentrm` command."""
    demo = subparsers.add_parser("demo", help="the whole pipeline in one command: SFT, MCTS, RM, search, table",
                                 description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", default="runs/demo", help="directory of the stages' outputs (default runs/demo)")
    demo.add_argument("--quick", action="store_true",
                      help="the config's quick: sizes (every stage, tiny budgets; what CI runs)")
    demo.add_argument("--fresh", action="store_true", help="delete the stages' outputs under --out and recompute")
    demo.add_argument("--redo-changed", action="store_true",
                      help="recompute only the stages made with another config and those below them; keep the rest")
    demo.add_argument("--config", default=None,
                      help="demo config (default configs/demo.yaml; its comments say why each size)")
    demo.set_defaults(func=_cmd_demo)
