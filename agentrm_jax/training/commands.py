"""`agentrm train` and `agentrm export`."""

from __future__ import annotations

import argparse
import sys

from agentrm_jax.training.config import HEAD_INITS, MeshShape, TrainConfig

# flag -> TrainConfig field, by flat name (`training.config`: lr is optimizer.lr), of the flags `add_run_flags`
# adds for every run of the trainer (`agentrm train`, `agentrm sft`)
RUN_OVERRIDES = {"model": "model", "data": "train", "eval_data": "eval", "steps": "steps", "epochs": "epochs",
                 "batch_size": "batch_size", "mesh": "mesh", "out": "out", "seed": "seed",
                 "save_every": "save_every", "lr": "lr", "finetune": "finetune", "precision": "precision",
                 "grad_accum": "grad_accum", "max_length": "max_length"}
_OVERRIDES = {**RUN_OVERRIDES, "kind": "kind", "target": "target", "head_init": "head_init"}


def overrides_from_args(args: argparse.Namespace, table: dict[str, str]) -> dict:
    """{TrainConfig field: value} of the flags in `table` (flag -> field) that were given."""
    return {field: getattr(args, flag) for flag, field in table.items() if getattr(args, flag) is not None}


def _mesh_flag(text: str) -> MeshShape:
    """--mesh's value; its ValueError becomes argparse's one-line error with the parser's own message."""
    try:
        return MeshShape.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_run_flags(parser: argparse.ArgumentParser, *, data_help: str, eval_data_help: str,
                  finetune_choices: tuple[str, ...]) -> None:
    """The flags of `RUN_OVERRIDES`, each overriding one key of the config, plus --overwrite and
    --no-progress: what every command that runs the trainer takes."""
    parser.add_argument("--model", help="backbone: bundled | HF_DIR | FILE.gguf (overrides model)")
    parser.add_argument("--data", help=data_help)
    parser.add_argument("--eval-data", help=eval_data_help)
    parser.add_argument("--finetune", choices=list(finetune_choices), help="what is trained (overrides finetune)")
    parser.add_argument("--steps", type=int, help="optimizer steps (overrides steps and epochs)")
    parser.add_argument("--epochs", type=float, help="passes over the data (overrides steps and epochs)")
    parser.add_argument("--batch-size", type=int, help="records per step over all devices (overrides data.batch_size)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per step (overrides optimizer.grad_accum)")
    parser.add_argument("--max-length", type=int, help="tokens per trajectory at most (overrides data.max_length)")
    parser.add_argument("--lr", type=float, help="peak learning rate (overrides optimizer.lr)")
    parser.add_argument("--precision", choices=["float32", "bf16"], help="compute precision (overrides precision)")
    parser.add_argument("--mesh", type=_mesh_flag,
                        help="device mesh, e.g. data=1,fsdp=8,tensor=1; the product must equal the device count")
    parser.add_argument("--out", help="run directory; an existing run there is resumed (overrides out); a non-empty "
                                      "directory that is not a run is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over: delete the run's own files in --out (checkpoints/, metrics.jsonl, "
                             "train_config.json; an sft run's policy/ and sft_config.json too; other files there "
                             "are kept) instead of resuming or refusing")
    parser.add_argument("--seed", type=int, help="initialisation and data-order seed (overrides seed)")
    parser.add_argument("--save-every", type=int, help="checkpoint every N steps (overrides outputs.save_every)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config file (if any) with the flags' values on top."""
    overrides = overrides_from_args(args, _OVERRIDES)
    if args.config:
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(overrides, source="flags")


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.plan:
        return _plan(config, args)
    from agentrm_jax.models.compile_cache import use_persistent_compile_cache
    from agentrm_jax.training.trainer import NonFiniteError, train

    use_persistent_compile_cache()
    try:
        result = train(config, progress=not args.no_progress, overwrite=args.overwrite)
    except NonFiniteError as e:
        print(f"agentrm train: {e}", file=sys.stderr)
        return 3
    print(f"train: {summary(result)}; export with `agentrm export --ckpt {result.out} --out {result.out}/hf`",
          file=sys.stderr)
    return 0


def _plan(config: TrainConfig, args: argparse.Namespace) -> int:
    """--plan: the per-device memory, no weights loaded; exit 0 when it fits (or no device is named), 1 if not."""
    import json

    from agentrm_jax.training.plan import format_plan, memory_plan

    plan = memory_plan(config, source=args.config or "flags")
    print(json.dumps(plan.to_dict()) if args.json else format_plan(plan))
    return 1 if plan.fits is False else 0


def summary(result) -> str:
    """One line on a finished `train` call: where it started, the last step and its loss, the last eval."""
    last = "no loss logged" if result.last_loss is None else f"last loss {result.last_loss:.4f}"
    evals = "".join(f", {k}={v:.4f}" for k, v in result.eval.items())
    if result.already_complete:
        return (f"the run in {result.out} was already complete at step {result.step} ({last}{evals}); nothing "
                "to train (raise --steps to go on; the LR schedule is then rebuilt for the new length, or pass "
                "--overwrite to start over)")
    where = f"resumed from step {result.resumed_from}, " if result.resumed_from is not None else ""
    return f"{where}step {result.step} in {result.out} ({last}{evals})"


def _cmd_export(args: argparse.Namespace) -> int:
    from agentrm_jax.training.export import export_run

    out = export_run(args.ckpt, args.out, step=args.step, overwrite=args.overwrite)
    print(f"export: wrote {out}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `train` and `export` to the `agentrm` command."""
    tr = subparsers.add_parser(
        "train", help="train a reward model (explicit / implicit / pairwise) on JSONL records",
        description="Train a reward model with one sharded, jitted train step on a (data, fsdp, tensor) mesh: "
                    "grain data pipeline, AdamW with warmup + cosine, LoRA / full / head-only fine-tuning, orbax "
                    "checkpoints, metrics.jsonl and eval metrics in the run directory. Rerunning the same command "
                    "resumes from the latest checkpoint. Flags override the config's keys (see "
                    "configs/train_cpu.yaml; every key is documented in agentrm_jax/training/config.py and "
                    "sections.py). Example: agentrm train --config configs/train_cpu.yaml --steps 20 --out runs/try")
    tr.add_argument("--config", help="YAML train config")
    add_run_flags(tr, data_help="training records, JSONL (overrides data.train)",
                  eval_data_help="evaluation records, JSONL (overrides data.eval)",
                  finetune_choices=("lora", "full", "head"))
    tr.add_argument("--kind", choices=["explicit", "implicit", "pairwise"], help="reward model kind (overrides kind)")
    tr.add_argument("--target", choices=["value", "progress", "success"],
                    help="record field holding the target / label (overrides data.target)")
    tr.add_argument("--head-init", choices=list(HEAD_INITS),
                    help="value head start (overrides head_init): normal (N(0, 0.02), exportable to transformers) "
                         "or mean (explicit: zero weights and a bias at the targets' mean, our format only)")
    tr.add_argument("--plan", action="store_true",
                    help="dry run: print the per-device memory (parameters, optimizer state, gradients, activations) "
                         "on the config's mesh and whether it fits compute.device; loads no weights, needs no devices")
    tr.add_argument("--json", action="store_true", help="with --plan: one JSON object")
    tr.set_defaults(func=_cmd_train)

    ex = subparsers.add_parser(
        "export", help="write a trained RM as a transformers model directory",
        description="Export a checkpoint of `agentrm train`: explicit and pairwise RMs become a transformers "
                    "LlamaForSequenceClassification (num_labels 1, value head -> score, LoRA merged) that torch "
                    "and TRL load, and that `agentrm score --rm DIR` reads back; implicit PRMs become a causal LM "
                    "plus agentrm.json naming the reference model and beta.")
    ex.add_argument("--ckpt", required=True, help="the run directory (or its checkpoints/ folder)")
    ex.add_argument("--out", required=True, help="output directory (new or empty, unless --overwrite)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --out (never a training run)")
    ex.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    ex.set_defaults(func=_cmd_export)
