"""The sections of a `TrainConfig`: frozen, keyword-only dataclasses, each checked when built.

    MeshShape         device mesh sizes (data, fsdp, tensor)
    DataConfig        what the trainer reads and how it batches it (the data pipeline's own config)
    ObjectiveSection  the loss and its constants (loss, beta, margin)
    LoRASection       the adapters of finetune="lora" (rank, alpha, targets)
    OptimizerSection  AdamW, its schedule, clipping and gradient accumulation
    OutputSection     how often the run checkpoints, evaluates and logs, and how many checkpoints it keeps
    ComputeSection    how the backbone's forward runs (remat, scanned layers, attention kernel) and the
                      accelerator `agentrm train --plan` checks the memory against

Importable without jax, flax or grain: the few constants that live beside the model code
(`models.lora.LORA_TARGETS`, `rewards.explicit.LOSSES`) are imported when a section is checked.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ATTENTION", "FINETUNE", "KINDS", "PRECISIONS", "REMAT", "TARGETS", "ComputeSection", "DataConfig",
           "LoRASection", "MeshShape", "ObjectiveSection", "OptimizerSection", "OutputSection", "check_int",
           "check_number"]

KINDS = ("explicit", "implicit", "pairwise", "sft")  # sft: policy fine-tuning (agentrm sft)
TARGETS = ("value", "progress", "success")
FINETUNE = ("lora", "full", "head")
PRECISIONS = ("float32", "bf16")
# Mirrors of models.config.REMAT_POLICIES / ATTENTION_IMPLS (kept here so the config imports no flax;
# tests/training/test_train_config.py checks they agree).
REMAT = ("none", "full", "dots_saveable")
ATTENTION = ("grouped", "dot_product")
_DEFAULT_TARGET = {"explicit": "value", "implicit": "success", "pairwise": None, "sft": None}
_MESH_ITEM = re.compile(r"^\s*(data|fsdp|tensor)\s*=\s*(\d+)\s*$")


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_int(owner: str, name: str, value: Any, lo: int) -> None:
    """Raise ValueError naming `owner.name` unless `value` is an integer >= lo."""
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{owner}.{name} must be an integer >= {lo}, got {value!r}")


def check_number(owner: str, name: str, value: Any, lo=None, hi=None, lo_open: bool = False) -> None:
    """Raise ValueError naming `owner.name` unless `value` is a finite number in the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{owner}.{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{owner}.{name} must be <= {hi}, got {value!r}")


@dataclass(frozen=True)
class MeshShape:
    """Device mesh sizes along (data, fsdp, tensor); their product is the device count."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        for name in ("data", "fsdp", "tensor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"mesh.{name} must be a positive integer, got {value!r}")

    @property
    def size(self) -> int:
        """The number of devices the mesh spans."""
        return self.data * self.fsdp * self.tensor

    @property
    def batch_shards(self) -> int:
        """How many ways the batch is split (data x fsdp)."""
        return self.data * self.fsdp

    @classmethod
    def parse(cls, value: Any) -> MeshShape:
        """From "data=2,fsdp=4,tensor=1", a mapping {data: 2, ...}, or a MeshShape; missing axes are 1."""
        if isinstance(value, MeshShape):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"data", "fsdp", "tensor"})
            if unknown:
                raise ValueError(f"mesh has unknown axes {unknown}; the axes are data, fsdp, tensor")
            return cls(**value)
        if isinstance(value, str):
            sizes = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                match = _MESH_ITEM.match(item)
                if not match:
                    raise ValueError(f"mesh {value!r}: {item!r} is not AXIS=SIZE with AXIS one of data, fsdp, tensor")
                sizes[match.group(1)] = int(match.group(2))
            return cls(**sizes)
        raise ValueError(f"mesh must be 'data=D,fsdp=F,tensor=T' or a mapping, got {value!r}")

    def __str__(self) -> str:
        return f"data={self.data},fsdp={self.fsdp},tensor={self.tensor}"


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """What the trainer reads and how it batches it (`TrainConfig.data`; `training.data` takes it whole).

    kind: one of KINDS. train / eval: JSONL paths (eval optional).
    target: the record field holding the regression target (explicit) or outcome
      label (implicit): "value", "progress" or "success"; None = "value" for
      explicit, "success" for implicit; ignored for pairwise.
    batch_size: GLOBAL batch in records (pairwise: pairs, the array batch is 2x).
    max_length: token budget per rendered trajectory (see `render_for_rm`).
    min_length_bucket: the smallest padded length L.
    seed: shuffle seed, an integer in [0, 2**32).
    """

    kind: str
    train: str
    eval: str | None = None
    target: str | None = None
    batch_size: int = 8
    max_length: int = 1024
    min_length_bucket: int = 32
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"DataConfig.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("train", "eval"):
            value = getattr(self, name)
            if value is None and name == "eval":
                continue
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise ValueError(f"DataConfig.{name} must be a JSONL file path, got {value!r}")
        if self.target is not None and self.target not in TARGETS:
            raise ValueError(f"DataConfig.target must be one of {TARGETS} or None (the kind's default), "
                             f"got {self.target!r}")
        checks = (("batch_size", 1, None), ("max_length", 8, None), ("min_length_bucket", 1, None),
                  ("seed", 0, 2**32 - 1))
        for name, lo, hi in checks:
            value = getattr(self, name)
            if not _is_int(value) or value < lo or (hi is not None and value > hi):
                bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"DataConfig.{name} must be an integer {bound}, got {value!r}")

    @property
    def target_field(self) -> str | None:
        """The record field read as target / label (None for pairwise)."""
        if self.kind in ("pairwise", "sft"):
            return None
        return self.target or _DEFAULT_TARGET[self.kind]

    @property
    def rows_per_example(self) -> int:
        """Rendered trajectories per example: 2 for a pair, else 1."""
        return 2 if self.kind == "pairwise" else 1


@dataclass(frozen=True, kw_only=True)
class ObjectiveSection:
    """The loss (`TrainConfig.objective`).

    loss: explicit only: "mse" (head output is the value) or "bce" (head output is a logit).
    beta: implicit only: reward scale. margin: pairwise only: Bradley-Terry margin.
    """

    loss: str = "mse"
    beta: float = 0.05
    margin: float = 0.0

    def __post_init__(self):
        from agentrm_jax.rewards.explicit import LOSSES  # here, not at the top: it imports jax

        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.objective.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        check_number("TrainConfig.objective", "beta", self.beta, lo=0, lo_open=True)
        check_number("TrainConfig.objective", "margin", self.margin)


def _all_lora_targets() -> tuple[str, ...]:
    from agentrm_jax.models.lora import LORA_TARGETS  # here, not at the top: it imports flax

    return tuple(LORA_TARGETS)


@dataclass(frozen=True, kw_only=True)
class LoRASection:
    """The adapters of finetune="lora" (`TrainConfig.lora`): rank, alpha (scale alpha / rank) and the
    projections they adapt (default: every one of `models.lora.LORA_TARGETS`)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = field(default_factory=_all_lora_targets)

    def __post_init__(self):
        check_int("TrainConfig.lora", "rank", self.rank, 1)
        check_number("TrainConfig.lora", "alpha", self.alpha, lo=0, lo_open=True)
        known = _all_lora_targets()
        unknown = sorted(set(self.targets) - set(known))
        if unknown or not self.targets:
            raise ValueError(f"TrainConfig.lora.targets must be a non-empty subset of {sorted(known)}; "
                             f"unknown: {unknown}")


@dataclass(frozen=True, kw_only=True)
class OptimizerSection:
    """AdamW and its schedule (`TrainConfig.optimizer`).

    lr, warmup_steps, min_lr_ratio: linear warmup from 0 to lr, then cosine decay to lr * min_lr_ratio.
    weight_decay (AdamW, on matrices only), b1, b2, grad_clip (global-norm clip; 0 = off).
    grad_accum: micro-batches per step (batch_size / grad_accum records each go through the model at once).
    """

    lr: float = 1e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    grad_accum: int = 1

    def __post_init__(self):
        owner = "TrainConfig.optimizer"
        check_number(owner, "lr", self.lr, lo=0, lo_open=True)
        check_int(owner, "warmup_steps", self.warmup_steps, 0)
        check_number(owner, "min_lr_ratio", self.min_lr_ratio, lo=0, hi=1)
        check_number(owner, "weight_decay", self.weight_decay, lo=0)
        check_number(owner, "b1", self.b1, lo=0, hi=1)
        check_number(owner, "b2", self.b2, lo=0, hi=1)
        check_number(owner, "grad_clip", self.grad_clip, lo=0)
        check_int(owner, "grad_accum", self.grad_accum, 1)


@dataclass(frozen=True, kw_only=True)
class OutputSection:
    """What the run writes into its directory, and how often (`TrainConfig.outputs`).

    save_every / keep: checkpoint every this many steps (and at the end), keeping the newest `keep`.
    eval_every: evaluate on `data.eval` every this many steps (and at the end); 0 = only at the end.
    log_every: append a metrics.jsonl row every this many steps.
    """

    save_every: int = 100
    keep: int = 3
    eval_every: int = 100
    log_every: int = 1

    def __post_init__(self):
        for name in ("save_every", "keep", "eval_every", "log_every"):
            check_int("TrainConfig.outputs", name, getattr(self, name), 0 if name == "eval_every" else 1)


@dataclass(frozen=True, kw_only=True)
class ComputeSection:
    """How the backbone's forward runs, and on what (`TrainConfig.compute`). None of it changes the
    numbers a step computes (to 1e-5), so all of it may change when a run is resumed.

    remat: what each decoder layer keeps for the backward pass: "none" (everything), "full" (only its
      input; the rest is recomputed, ~1/3 more compute) or "dots_saveable" (matmul outputs).
    scan_layers: run the layers as one `lax.scan` (compile time independent of depth).
    attention: "grouped" (matmul form, fastest on XLA:CPU) or "dot_product" (`jax.nn.dot_product_attention`:
      cuDNN's fused kernel on GPU with bf16).
    device: the accelerator `agentrm train --plan` checks memory against, a name of
      `training.plan.KNOWN_DEVICES` (e.g. "H100-80GB", "v5e"); device_memory_gb overrides its memory
      (or stands alone for another device).
    architecture: the backbone's shape for `--plan` on a machine without the weights: a name of
      `training.plan.KNOWN_ARCHITECTURES` (e.g. "llama-3.1-8b"); where the model is present its own
      config must agree with it.
    """

    remat: str = "none"
    scan_layers: bool = False
    attention: str = "grouped"
    device: str | None = None
    device_memory_gb: float | None = None
    architecture: str | None = None

    def __post_init__(self):
        owner = "TrainConfig.compute"
        if self.remat not in REMAT:
            raise ValueError(f"{owner}.remat must be one of {', '.join(REMAT)}, got {self.remat!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"{owner}.scan_layers must be true or false, got {self.scan_layers!r}")
        if self.attention not in ATTENTION:
            raise ValueError(f"{owner}.attention must be one of {', '.join(ATTENTION)}, got {self.attention!r}")
        for name in ("device", "architecture"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{owner}.{name} must be a name or null, got {value!r}")
        if self.device_memory_gb is not None:
            check_number(owner, "device_memory_gb", self.device_memory_gb, lo=0, lo_open=True)
