"""`agentrm export`: a training run's checkpoint -> a directory transformers and agentrm_jax load.

explicit / pairwise runs become a transformers sequence classifier (`LlamaForSequenceClassification`
or Qwen2's, one label; the value head is `score.weight`), written by `rewards.io.save_value_model`
with LoRA adapters merged into the base weights: torch and TRL users score with it directly, and
`rewards.io.load_value_model` (or `agentrm score --rm DIR`) reads it back.

implicit runs become a causal LM (`LlamaForCausalLM`, adapters merged) plus `agentrm.json` naming
the reference (the run's base model) and beta: the implicit PRM is `beta * log pi_DIR / pi_reference`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentrm_jax.models.lora import has_lora, merge_lora
from agentrm_jax.rewards.io import RM_METADATA, save_value_model
from agentrm_jax.training.checkpoint import read_meta
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.trainer import CHECKPOINTS, resolve_model_path, trained_model

__all__ = ["export_run"]


def _checkpoint_dir(path: Path) -> Path:
    """A run directory (holding checkpoints/) or the checkpoints directory itself."""
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def export_run(ckpt: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None) -> Path:
    """Write the checkpoint `step` (default: latest) of the run at `ckpt` to `out`; returns `out`."""
    ckpt_dir = _checkpoint_dir(Path(ckpt))
    meta = read_meta(ckpt_dir, step)
    if "config" not in meta:
        raise ValueError(f"{ckpt_dir}: checkpoint metadata has no 'config'; was it written by `agentrm train`?")
    config = TrainConfig.from_dict(meta["config"], source=f"{ckpt_dir} (checkpoint meta)")
    model, meta = trained_model(config, ckpt_dir, step=step)
    from agentrm_jax.models import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_path(config.model))
    extra = {"trained": {"step": meta.get("step"), "config": meta["config"]}}
    out = Path(out)
    if config.kind == "implicit":
        from agentrm_jax.models import save_pretrained

        if has_lora(model):
            merge_lora(model)
        save_pretrained(model, out)
        tokenizer.save_pretrained(str(out))
        reference = str(resolve_model_path(config.model))
        (out / RM_METADATA).write_text(json.dumps(
            {"format_version": 1, "kind": "implicit", "beta": config.beta, "reference": reference, **extra},
            indent=2))
        return out
    if has_lora(model.backbone):
        merge_lora(model.backbone)
    loss = config.loss if config.kind == "explicit" else "mse"  # a BT-trained head outputs an unbounded score
    return save_value_model(model, out, loss=loss, tokenizer=tokenizer, extra={"kind": config.kind, **extra})
