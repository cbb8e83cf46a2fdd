"""Saving and loading explicit reward models in transformers' sequence-classification format.

A saved RM directory is what transformers' `AutoModelForSequenceClassification`
loads (one label): `config.json` (the backbone's config with
`architectures: [LlamaForSequenceClassification | Qwen2ForSequenceClassification]`
and `num_labels: 1`) and `model.safetensors` (`model.*` backbone tensors and
`score.weight` [1, hidden]). So torch/TRL users run our RMs, and RMs trained
elsewhere in that format are scored by us.

Beside them, `agentrm.json` records what transformers' format cannot: the
loss the head was trained with (which fixes the score transform) and a head
that is not a plain linear map (MLP or bias; its tensors then live in
`value_head.safetensors` and the directory is ours only). A directory without
`agentrm.json` is read as a linear head with identity transform, which is how
transformers' classifiers with one label score.

A run directory of `agentrm train` (`train_config.json` beside `checkpoints/`;
older runs named that file `config.json`) is not an RM directory: `training_run`
recognises one, and `load_value_model` refuses it with the export command to
run (`agentrm score --rm RUN_DIR` loads a run's latest checkpoint itself).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.loading import (_safetensors_files, iter_safetensors, load_tokenizer,
                                        model_from_hf_tensors, to_hf_state_dict)
from agentrm_jax.rewards.explicit import LOSSES
from agentrm_jax.rewards.heads import HeadConfig, ValueHead, ValueModel
from agentrm_jax.runs import CHECKPOINTS, is_training_run

__all__ = ["RM_METADATA", "load_value_model", "save_value_model", "training_run",
           "training_run_message"]

RM_METADATA = "agentrm.json"
_HEAD_FILE = "value_head.safetensors"
_CLASSIFIERS = {"llama": "LlamaForSequenceClassification", "qwen2": "Qwen2ForSequenceClassification"}


def training_run(path: str | os.PathLike) -> Path | None:
    """The `agentrm train` run directory that `path` is (or whose checkpoints/ folder it is); else None.

    A run holds `train_config.json`, or (runs written before that name) a `config.json` that is a
    train config rather than an HF model config (`agentrm_jax.runs`).
    """
    path = Path(path)
    if path.name == CHECKPOINTS and path.is_dir() and not (path / "config.json").exists():
        return training_run(path.parent)
    return path if is_training_run(path) else None


def training_run_message(run: str | os.PathLike) -> str:
    """The one line that says a path is a training run and how to make a reward model of it."""
    return (f"{run} is a training run, not an exported reward model: run `agentrm export --ckpt {run} "
            f"--out {Path(run) / 'hf'}` and score that")


def save_value_model(model: ValueModel, directory: str | os.PathLike, *, loss: str = "mse", tokenizer=None,
                     extra: dict | None = None) -> Path:
    """Write `model` as a transformers sequence classifier (plus `agentrm.json`); returns the directory.

    loss: "mse" or "bce" (what the head outputs: a value, or a logit).
    tokenizer: saved alongside when given, so the directory is self-contained.
    extra: more metadata for agentrm.json (e.g. training config).
    """
    from safetensors.numpy import save_file

    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.backbone.config
    tensors = {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(model.backbone).items()
               if k != "lm_head.weight"}  # a classifier has no LM head
    head = model.head
    if head.config.hf_compatible:
        tensors["score.weight"] = np.asarray(head.weight[...], np.float32)
    else:
        head_tensors = {".".join(map(str, p)): np.ascontiguousarray(np.asarray(v.get_value(), np.float32))
                        for p, v in nnx.to_flat_state(nnx.state(head, nnx.Param))}
        save_file(head_tensors, str(directory / _HEAD_FILE), metadata={"format": "agentrm"})
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf_config = config.to_hf_config()
    hf_config.update(architectures=[_CLASSIFIERS[config.model_type]], num_labels=1,
                     id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
    meta = {"format_version": 1, "kind": "explicit", "loss": loss, "head": head.config.to_dict(), **(extra or {})}
    (directory / RM_METADATA).write_text(json.dumps(meta, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def load_value_model(path: str | os.PathLike, *, dtype="float32", param_dtype=None
                     ) -> tuple[ValueModel, str, dict]:
    """(value model, loss, metadata) from a directory written by `save_value_model` or by transformers.

    Raises with the file and field named when the directory is not a
    one-label Llama/Qwen2 sequence classifier.
    """
    path = Path(path)
    run = training_run(path)
    if run is not None:
        raise ValueError(training_run_message(run))
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing: a reward model directory holds config.json and "
                                "*.safetensors (written by `agentrm train` or transformers' save_pretrained)")
    hf_config = json.loads(config_file.read_text())
    architectures = hf_config.get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ValueError(f"{config_file}: architectures={architectures} is not a sequence classifier; "
                         "expected LlamaForSequenceClassification or Qwen2ForSequenceClassification "
                         "(for a causal LM use --rm-kind implicit or judge)")
    num_labels = hf_config.get("num_labels", len(hf_config.get("id2label") or {}) or 2)
    if num_labels != 1:
        raise ValueError(f"{config_file}: num_labels={num_labels}; a reward model has one label (field num_labels)")
    meta_file = path / RM_METADATA
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    loss = meta.get("loss", "mse")
    if loss not in LOSSES:
        raise ValueError(f"{meta_file}: loss={loss!r}; expected one of {LOSSES} (field loss)")
    head_config = HeadConfig(**meta.get("head", {}))
    config = ModelConfig.from_hf_config(hf_config)
    dtype = jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype or dtype)

    score = {}

    def backbone_tensors():
        for f in _safetensors_files(path):
            if f.name == _HEAD_FILE:
                continue
            for name, array in iter_safetensors(f):
                if name.startswith("score."):
                    score[name] = np.asarray(array, np.float32)
                else:
                    yield name, array

    backbone = model_from_hf_tensors(config, backbone_tensors(), dtype=dtype, param_dtype=param_dtype,
                                     source=str(path), zeros_if_missing=("lm_head",))
    head = nnx.eval_shape(lambda: ValueHead(config.hidden_size, head_config, param_dtype=param_dtype,
                                            rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(head)
    targets = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    if head_config.hf_compatible:
        if set(score) != {"score.weight"}:
            raise ValueError(f"{path}: expected exactly the tensor score.weight for the value head, found "
                             f"{sorted(score) or 'none'}")
        arrays = {"weight": score["score.weight"]}
    else:
        head_file = path / _HEAD_FILE
        if not head_file.exists():
            raise FileNotFoundError(f"{head_file} is missing; {meta_file} says the head is {head_config}")
        arrays = {name: np.asarray(a, np.float32) for name, a in iter_safetensors(head_file)}
    if set(arrays) != set(targets):
        raise ValueError(f"{path}: value head tensors {sorted(arrays)} do not match {sorted(targets)}")
    for name, array in arrays.items():
        if array.shape != targets[name].shape:
            raise ValueError(f"{path}: value head tensor {name!r} has shape {array.shape}, expected "
                             f"{targets[name].shape} (hidden_size={config.hidden_size})")
        targets[name].set_value(jnp.asarray(array, param_dtype))
    return ValueModel(backbone, nnx.merge(graphdef, state)), loss, meta


def load_rm_tokenizer(path: str | os.PathLike, fallback: str | os.PathLike | None = None):
    """The tokenizer saved in an RM directory, else the one of `fallback` (a model path)."""
    path = Path(path)
    if any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(path)
    if fallback is None:
        raise FileNotFoundError(f"{path} has no tokenizer files; pass --tokenizer PATH (an HF directory or "
                                ".gguf whose tokenizer the RM's backbone uses)")
    return load_tokenizer(fallback)
