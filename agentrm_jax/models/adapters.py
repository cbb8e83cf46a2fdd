"""LoRA adapters on disk, and a fine-tuned policy directory loaded as (model, tokenizer).

    save_adapters(model, directory, base=..., extra=...)   adapters.safetensors + adapters.json
    load_adapters(model, directory) -> model                adds the adapters (unmerged) to a base model
    load_policy(path) -> (model, tokenizer)                 an `agentrm sft` run (or its policy/ directory)
    check_base(directory, meta) -> base path                the base, if it holds the weights trained on

adapters.json holds rank, alpha, targets, the base model (`bundled` or a path) and the fingerprint of
the base's weight files (`models.base_fingerprint`): `load_policy` refuses, in one line naming both, a
base that now holds other weights than those the adapters were trained on (adapters over other weights
compute something else without any error). The tensors are named `layers.{i}.{attn|mlp}.{proj}_lora_{a|b}`
in our layout (`models.lora`). A policy directory is either adapters over a base or a whole HF model
directory (full fine-tuning); an SFT run directory holds one under `policy/`.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ADAPTERS_CONFIG", "ADAPTERS_FILE", "POLICY_DIR", "check_base", "load_adapters", "load_policy",
           "save_adapters"]

ADAPTERS_FILE = "adapters.safetensors"
ADAPTERS_CONFIG = "adapters.json"
POLICY_DIR = "policy"


def _adapter_vars(model) -> dict[str, Any]:
    from agentrm_jax.models.lora import LORA_TARGETS

    found = {}
    for i, layer in enumerate(model.layers):
        for name, (block_name, _, _) in LORA_TARGETS.items():
            block = getattr(layer, block_name)
            for part in ("a", "b"):
                var = getattr(block, f"{name}_lora_{part}", None)
                if var is not None:
                    found[f"layers.{i}.{block_name}.{name}_lora_{part}"] = var
    return found


def _base_path(base: str) -> Path:
    """The weights `base` names: `bundled` is the bundled GGUF."""
    if base == "bundled":
        from agentrm_jax.models.bundled import bundled_model_path

        return Path(bundled_model_path())
    return Path(base)


def save_adapters(model, directory: str | os.PathLike, *, base: str, rank: int, alpha: float,
                  extra: dict | None = None, base_fingerprint: dict | None = None) -> Path:
    """Write the model's adapters (float32) and adapters.json into `directory` (created); returns it.

    base_fingerprint: of the weights the adapters were trained on (a run's checkpoint records it);
    None: taken from `base` now (none when `base` names no file, e.g. a model built in memory).
    """
    from safetensors.numpy import save_file

    from agentrm_jax.models.base_fingerprint import base_fingerprint as fingerprint

    found = _adapter_vars(model)
    if not found:
        raise ValueError("the model has no LoRA adapters to save")
    targets = sorted({key.split(".")[-1].rsplit("_lora_", 1)[0] for key in found})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if base_fingerprint is None and _base_path(str(base)).exists():
        base_fingerprint = fingerprint(_base_path(str(base)))
    save_file({k: np.asarray(v[...], np.float32) for k, v in found.items()}, str(directory / ADAPTERS_FILE))
    (directory / ADAPTERS_CONFIG).write_text(json.dumps(
        {"format_version": 1, "base": str(base), "rank": int(rank), "alpha": float(alpha), "targets": targets,
         "base_fingerprint": base_fingerprint, **(extra or {})}, indent=2))
    return directory


def load_adapters(model, directory: str | os.PathLike):
    """Add the adapters of `directory` to `model` (in place, unmerged; returns it). A file that does not
    fit the model (names, shapes) is a ValueError naming it."""
    from agentrm_jax.models.loading import iter_safetensors
    from agentrm_jax.models.lora import add_lora

    directory = Path(directory)
    meta = json.loads((directory / ADAPTERS_CONFIG).read_text())
    add_lora(model, rank=int(meta["rank"]), alpha=float(meta["alpha"]), targets=tuple(meta["targets"]))
    found = _adapter_vars(model)
    seen = set()
    for name, array in iter_safetensors(directory / ADAPTERS_FILE):
        var = found.get(name)
        if var is None or tuple(var.shape) != tuple(array.shape):
            raise ValueError(f"{directory / ADAPTERS_FILE}: tensor {name} {tuple(array.shape)} does not fit this "
                             f"model ({'no such adapter' if var is None else f'expected {tuple(var.shape)}'}); "
                             "was it trained on another base?")
        var.set_value(np.asarray(array, np.float32).astype(var[...].dtype))
        seen.add(name)
    missing = sorted(set(found) - seen)
    if missing:
        raise ValueError(f"{directory / ADAPTERS_FILE} lacks {len(missing)} adapters (e.g. {missing[0]})")
    return model


def check_base(directory: str | os.PathLike, meta: dict) -> Path:
    """The base weights of the adapters in `directory` (adapters.json read as `meta`), checked against the
    fingerprint recorded at save: a ValueError naming both when they differ; adapters saved without one
    (before fingerprints were recorded) pass with a warning."""
    from agentrm_jax.models.base_fingerprint import base_fingerprint, describe, fingerprint_change

    base = _base_path(str(meta["base"]))
    saved = meta.get("base_fingerprint")
    if not base.exists():
        raise FileNotFoundError(f"{Path(directory) / ADAPTERS_CONFIG}: the base model {base} does not exist; "
                                "put the base the adapters were trained on there (or edit \"base\")")
    if saved is None:
        warnings.warn(f"{Path(directory) / ADAPTERS_CONFIG} records no fingerprint of its base weights (older "
                      f"adapters); applying them to {base} as it is: make sure it is the base they were trained on",
                      stacklevel=3)
        return base
    current = base_fingerprint(base)
    if (change := fingerprint_change(saved, current)) is not None:
        raise ValueError(f"{Path(directory) / ADAPTERS_CONFIG}: these adapters were trained on base weights "
                         f"{describe(saved)}, but {meta['base']} now holds {describe(current)} ({change}); "
                         "load them over the base they were trained on")
    return base


def load_policy(path: str | os.PathLike, *, dtype: str = "float32"):
    """(model, tokenizer) of a fine-tuned policy: an SFT run directory (its policy/), a directory of
    adapters (base + adapters, unmerged; the base checked by `check_base`) or a full model directory."""
    from agentrm_jax.models.loading import from_pretrained

    path = Path(path)
    directory = path / POLICY_DIR if (path / POLICY_DIR).is_dir() else path
    if (directory / ADAPTERS_CONFIG).is_file():
        base = check_base(directory, json.loads((directory / ADAPTERS_CONFIG).read_text()))
        model, tokenizer = from_pretrained(base, dtype=dtype)
        return load_adapters(model, directory), tokenizer
    if (directory / "config.json").is_file():
        return from_pretrained(directory, dtype=dtype)
    raise FileNotFoundError(f"{path}: no policy here (neither {POLICY_DIR}/ nor {ADAPTERS_CONFIG} nor config.json); "
                            "an `agentrm sft` run writes policy/ when it finishes: rerun it to finish the run")
