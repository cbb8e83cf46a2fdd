"""The `TrainConfig`s the pipelines' training stages build from a config section (demo and reproduce)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["explicit_rm_config"]


def explicit_rm_config(*, model: str, section, train: Path, out: Path, source: str, eval: Path | None = None):
    """An explicit RM (MSE to the records' `value`) on `model`, sized by `section` (finetune, steps,
    batch_size, max_length, lr, and head_init where the section has one), one checkpoint at its end;
    `eval` records are scored at the end if given."""
    from agentrm_jax.training.config import TrainConfig

    return TrainConfig.from_dict({
        "model": model, "kind": "explicit", "finetune": section.finetune, "steps": section.steps, "seed": 0,
        "head_init": getattr(section, "head_init", "normal"),
        "out": str(out),
        "data": {"train": str(train), **({"eval": str(eval)} if eval is not None else {}), "target": "value",
                 "batch_size": section.batch_size, "max_length": section.max_length},
        "objective": {"loss": "mse"},
        "optimizer": {"lr": section.lr, "warmup_steps": min(2, section.steps - 1)},
        "outputs": {"save_every": section.steps, "eval_every": 0, "log_every": 1},
    }, source=source)
