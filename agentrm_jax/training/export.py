"""`agentrm export`: a training run's checkpoint -> a directory transformers and agentrm_jax load.

explicit / pairwise runs become a transformers sequence classifier (`LlamaForSequenceClassification`
or Qwen2's, one label; the value head is `score.weight`), written by `rewards.io.save_value_model`
with LoRA adapters merged into the base weights: torch and TRL users score with it directly, and
`rewards.io.load_value_model` (or `agentrm score --rm DIR`) reads it back.

implicit runs become a causal LM (`LlamaForCausalLM`, adapters merged) plus `agentrm.json` naming
the reference (the run's base model) and beta: the implicit PRM is `beta * log pi_DIR / pi_reference`.

sft runs (`agentrm sft`, a fine-tuned policy) become a plain causal LM (`LlamaForCausalLM`, adapters
merged) with its tokenizer, which transformers' `from_pretrained` and `--policy DIR` load.

The directory is written next to `out` under a temporary name and renamed into place when complete, so
a failed export leaves nothing behind. An existing non-empty `out` is refused unless `overwrite`
(then replaced only once the new export is complete); a training run is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from agentrm_jax.models.lora import has_lora, merge_lora
from agentrm_jax.rewards.io import RM_METADATA, save_value_model
from agentrm_jax.training.checkpoint import read_meta
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.run_dir import CHECKPOINTS, is_training_run
from agentrm_jax.training.trainer import resolve_model_path, trained_model

__all__ = ["export_run"]


def _checkpoint_dir(path: Path) -> Path:
    """A run directory (holding checkpoints/) or the checkpoints directory itself."""
    return path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path


def _check_out(out: Path, ckpt_dir: Path, overwrite: bool) -> None:
    """Refuses an `out` that is a file, a training run or holds the checkpoints being read, and a non-empty
    directory unless overwrite, which replaces only a model directory (config.json + model.safetensors)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory to write the model to")
    if not out.is_dir():
        return
    if is_training_run(out) or ckpt_dir.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} is a training run (or holds the checkpoints being exported); export to "
                         f"another directory, e.g. --out {out / 'hf'}")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    shown = ", ".join(entries[:6]) + (f", ... ({len(entries)} entries)" if len(entries) > 6 else "")
    if not overwrite:
        raise ValueError(f"--out {out} already exists and is not empty (it holds {shown}); choose another "
                         "directory, or pass --overwrite to replace it")
    # --overwrite replaces a model directory (an earlier export, an HF model), never anything else:
    # the whole directory is deleted once the new export is in place.
    if out.is_symlink():
        raise ValueError(f"--out {out} is a symbolic link; give the directory itself to replace it")
    if not {"config.json", "model.safetensors"} <= set(entries):
        raise ValueError(f"--out {out} is not a model directory (it holds {shown}, not config.json + "
                         "model.safetensors), so --overwrite will not delete it; choose another directory")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Renames the complete export `tmp` to `out`; an existing `out` is moved aside first and deleted
    only once the new one is in place (restored if that rename fails)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def _sibling(out: Path, tag: str) -> Path:
    """An unused hidden name beside `out` (same filesystem, so renames between them are atomic)."""
    return out.absolute().parent / f".{out.name}.{tag}-{uuid.uuid4().hex[:8]}"


def export_run(ckpt: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None,
               overwrite: bool = False) -> Path:
    """Write the checkpoint `step` (default: latest) of the run at `ckpt` to `out`; returns `out`.

    `out` must be new or empty unless `overwrite` (never a training run); it appears complete or not at
    all (see the module docstring).
    """
    ckpt_dir = _checkpoint_dir(Path(ckpt))
    out = Path(out)
    _check_out(out, ckpt_dir, overwrite)
    meta = read_meta(ckpt_dir, step)
    if "config" not in meta:
        raise ValueError(f"{ckpt_dir}: checkpoint metadata has no 'config'; was it written by `agentrm train`?")
    config = TrainConfig.from_dict(meta["config"], source=f"{ckpt_dir} (checkpoint meta)")
    model, meta = trained_model(config, ckpt_dir, step=step)
    from agentrm_jax.models import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_path(config.model))
    parent = out.absolute().parent
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # created here, removed on failure
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "partial")
    tmp.mkdir()  # not mkdtemp: its 0o700 would become the export's permissions
    try:
        _write(model, config, meta, tokenizer, tmp)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in made:  # innermost first
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    return out


def _write(model, config: TrainConfig, meta: dict, tokenizer, out: Path) -> None:
    """The export files of `model` (trained under `config`) in the existing directory `out`."""
    extra = {"trained": {"step": meta.get("step"), "config": meta["config"]}}
    if config.kind == "sft":  # a fine-tuned policy: a plain causal LM, adapters merged
        from agentrm_jax.models import save_pretrained

        if has_lora(model):
            merge_lora(model)
        save_pretrained(model, out)
        tokenizer.save_pretrained(str(out))
        (out / "agentrm_policy.json").write_text(json.dumps({"format_version": 1, "kind": "sft", **extra}, indent=2))
        return
    if config.kind == "implicit":
        from agentrm_jax.models import save_pretrained

        if has_lora(model):
            merge_lora(model)
        save_pretrained(model, out)
        tokenizer.save_pretrained(str(out))
        reference = str(resolve_model_path(config.model))
        (out / RM_METADATA).write_text(json.dumps(
            {"format_version": 1, "kind": "implicit", "beta": config.objective.beta, "reference": reference, **extra},
            indent=2))
        return
    if has_lora(model.backbone):
        merge_lora(model.backbone)
    loss = config.objective.loss if config.kind == "explicit" else "mse"  # a BT-trained head outputs an unbounded score
    save_value_model(model, out, loss=loss, tokenizer=tokenizer, extra={"kind": config.kind, **extra})
