"""`TrainConfig`: everything `agentrm train` needs, read from YAML and overridden by flags.

One flat, frozen dataclass; every field is checked when the config is built
(before any model is loaded or anything compiled), and an unknown YAML key is
an error naming `file:line`. Example (configs/train_cpu.yaml):

    model: bundled              # bundled | HF_DIR | FILE.gguf: the backbone
    kind: explicit              # explicit (value head, regression) | implicit (beta log pi/pi_ref) | pairwise (BT)
    train: configs/data/smollm2_rollouts.jsonl
    target: progress            # record field with the target / label: value | progress | success
    finetune: lora              # lora | full | head
    steps: 60
    batch_size: 8
    lr: 3.0e-4
    mesh: data=1,fsdp=1,tensor=1
    out: runs/rm_cpu
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from agentrm_jax.models.lora import LORA_TARGETS
from agentrm_jax.rewards.explicit import LOSSES
from agentrm_jax.training.data import KINDS, TARGETS, DataConfig
from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["FINETUNE", "PRECISIONS", "MeshShape", "TrainConfig"]

FINETUNE = ("lora", "full", "head")
PRECISIONS = ("float32", "bf16")
_MESH_ITEM = re.compile(r"^\s*(data|fsdp|tensor)\s*=\s*(\d+)\s*$")


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
class TrainConfig:
    """A reward-model training run.

    model: the backbone: "bundled" (SmolLM2-135M-Instruct GGUF), an HF directory or a .gguf file.
    kind: "explicit" (value head regressed on `target` at the trajectory's last token), "implicit"
      (beta * log pi_theta/pi_ref summed over agent tokens, BCE to the outcome label) or "pairwise"
      (value head, Bradley-Terry on chosen/rejected pairs).
    train / eval: JSONL records (trajectories; pairs for pairwise). eval is optional.
    target: record field holding the target / label ("value", "progress", "success");
      None = "value" for explicit, "success" for implicit.
    loss: explicit only: "mse" (head output is the value) or "bce" (head output is a logit).
    beta: implicit only: reward scale. margin: pairwise only: BT margin.
    finetune: "lora" (adapters on `lora_targets` + the head), "full" (every weight), "head" (value head only;
      not for implicit). lora_rank / lora_alpha / lora_targets: the adapters.
    head_mlp: 0 = linear value head (exportable to transformers); >0 = an MLP head of that width.
    batch_size: records (pairs) per optimizer step, over all devices and hosts.
    grad_accum: micro-batches per step (batch_size / grad_accum records each go through the model at once).
    max_length: token budget per trajectory (older steps are dropped beyond it, with a warning).
    steps / epochs: how long to train; give one (epochs: passes over `train`, rounded up to whole steps).
    lr, warmup_steps, min_lr_ratio: linear warmup from 0 to lr, then cosine decay to lr * min_lr_ratio.
    weight_decay (AdamW, on matrices only), b1, b2, grad_clip (global-norm clip; 0 = off).
    precision: "float32", or "bf16" (bfloat16 compute with float32 master weights and optimizer state).
    mesh: device mesh sizes (data, fsdp, tensor); their product must equal the device count.
    seed: head / adapter init and data order.
    out: run directory (checkpoints/, metrics.jsonl, config.yaml); rerunning with the same `out` resumes.
    save_every / keep: checkpoint every this many steps (and at the end), keeping the newest `keep`.
    eval_every: evaluate on `eval` every this many steps (and at the end); 0 = only at the end.
    log_every: append a metrics.jsonl row every this many steps.
    """

    model: str = "bundled"
    kind: str = "explicit"
    train: str = ""
    eval: str | None = None
    target: str | None = None
    loss: str = "mse"
    beta: float = 0.05
    margin: float = 0.0
    finetune: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = tuple(LORA_TARGETS)
    head_mlp: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    steps: int | None = 100
    epochs: float | None = None
    lr: float = 1e-4
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    precision: str = "float32"
    mesh: MeshShape = MeshShape()
    seed: int = 0
    out: str = "runs/rm"
    save_every: int = 100
    keep: int = 3
    eval_every: int = 100
    log_every: int = 1

    def __post_init__(self):
        def fail(name, message):
            raise ValueError(f"TrainConfig.{name} {message}")

        def positive_int(name, allow_zero=False):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
                fail(name, f"must be an integer >= {0 if allow_zero else 1}, got {value!r}")

        def number(name, lo=None, hi=None, lo_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                fail(name, f"must be a finite number, got {value!r}")
            if lo is not None and (value <= lo if lo_open else value < lo):
                fail(name, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
            if hi is not None and value > hi:
                fail(name, f"must be <= {hi}, got {value!r}")

        if not isinstance(self.model, str) or not self.model:
            fail("model", "must name the backbone: bundled, an HF directory or a .gguf file")
        if self.kind not in KINDS:
            fail("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.train, str) or not self.train:
            fail("train", "must name a JSONL file of training records (--data PATH)")
        if self.eval is not None and not isinstance(self.eval, str):
            fail("eval", f"must be a JSONL path or null, got {self.eval!r}")
        if self.target is not None and self.target not in TARGETS:
            fail("target", f"must be one of {', '.join(TARGETS)} (or null), got {self.target!r}")
        if self.loss not in LOSSES:
            fail("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        number("beta", lo=0, lo_open=True)
        number("margin")
        if self.finetune not in FINETUNE:
            fail("finetune", f"must be one of {', '.join(FINETUNE)}, got {self.finetune!r}")
        if self.finetune == "head" and self.kind == "implicit":
            fail("finetune", "'head' has no meaning for the implicit PRM (it has no head); use lora or full")
        positive_int("lora_rank")
        number("lora_alpha", lo=0, lo_open=True)
        unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
        if unknown or not self.lora_targets:
            fail("lora_targets", f"must be a non-empty subset of {sorted(LORA_TARGETS)}; unknown: {unknown}")
        positive_int("head_mlp", allow_zero=True)
        for name in ("batch_size", "grad_accum", "max_length", "warmup_steps", "save_every", "keep",
                     "eval_every", "log_every", "seed"):
            positive_int(name, allow_zero=name in ("warmup_steps", "eval_every", "seed"))
        if self.batch_size % self.grad_accum:
            fail("grad_accum", f"must divide batch_size={self.batch_size}, got {self.grad_accum}")
        if (self.steps is None) == (self.epochs is None):
            fail("steps", f"give exactly one of steps and epochs (steps={self.steps}, epochs={self.epochs})")
        if self.steps is not None:
            positive_int("steps")
        if self.epochs is not None:
            number("epochs", lo=0, lo_open=True)
        number("lr", lo=0, lo_open=True)
        number("min_lr_ratio", lo=0, hi=1)
        number("weight_decay", lo=0)
        number("b1", lo=0, hi=1)
        number("b2", lo=0, hi=1)
        number("grad_clip", lo=0)
        if self.precision not in PRECISIONS:
            fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.mesh, MeshShape):
            fail("mesh", f"must be a MeshShape, got {self.mesh!r}")
        micro_rows = self.batch_size // self.grad_accum
        if micro_rows % self.mesh.batch_shards:
            fail("batch_size", f"/ grad_accum = {micro_rows} records per micro-batch must be divisible by "
                               f"mesh data x fsdp = {self.mesh.batch_shards}")
        if not isinstance(self.out, str) or not self.out:
            fail("out", "must name the run directory")
        self.data_config()  # the data fields' own checks

    def data_config(self) -> DataConfig:
        """The data pipeline's view of this config."""
        return DataConfig(kind=self.kind, train=self.train, eval=self.eval, target=self.target,
                          batch_size=self.batch_size, max_length=self.max_length, seed=self.seed)

    # ------------------------------------------------------------------------------------------ I/O

    def to_dict(self) -> dict[str, Any]:
        """Plain values (YAML / JSON), the form `from_dict` reads back."""
        d = dataclasses.asdict(self)
        d["mesh"] = str(self.mesh)
        d["lora_targets"] = list(self.lora_targets)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config",
                  lines: dict[str, int] | None = None) -> TrainConfig:
        """Build from plain values; unknown keys and bad values are errors naming `source` (and the line)."""
        check_keys(data, (f.name for f in dataclasses.fields(cls)), source=source, what="train config",
                   lines=lines)
        values = dict(data)
        if values.get("epochs") is not None and "steps" not in values:
            values["steps"] = None  # epochs replaces the default step count
        try:
            if "mesh" in values:
                values["mesh"] = MeshShape.parse(values["mesh"])
            if "lora_targets" in values:
                targets = values["lora_targets"]
                values["lora_targets"] = tuple([targets] if isinstance(targets, str) else targets or ())
            for name in ("lr", "beta", "margin", "lora_alpha", "min_lr_ratio", "weight_decay", "b1", "b2",
                         "grad_clip", "epochs"):
                if isinstance(values.get(name), int) and not isinstance(values[name], bool):
                    values[name] = float(values[name])
                elif isinstance(values.get(name), str):  # PyYAML reads 1e-4 (no dot: YAML 1.1) as a string
                    try:
                        values[name] = float(values[name])
                    except ValueError:
                        pass  # left for __post_init__ to reject, naming the field
            for name in ("model", "train", "eval", "out"):
                if isinstance(values.get(name), os.PathLike):
                    values[name] = os.fspath(values[name])
            return cls(**values)
        except (ValueError, TypeError) as e:
            key = next((k for k in values if f"TrainConfig.{k} " in str(e) or str(e).startswith(k)), None)
            where = f"{source}:{lines[key]}" if lines and key in lines else source
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML file, then apply `overrides` (field names; None values are ignored)."""
        data, lines = read_mapping(path, "train config", "configs/train_cpu.yaml")
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        if "steps" in overrides:
            data.pop("epochs", None)
        if "epochs" in overrides:
            data.pop("steps", None)
        data.update(overrides)
        return cls.from_dict(data, source=str(path), lines={k: v for k, v in lines.items() if k not in overrides})

    def replace(self, **overrides) -> TrainConfig:
        """A copy with some fields changed (None leaves a field)."""
        data = self.to_dict()
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "steps" in overrides:
            data["epochs"] = None
        if "epochs" in overrides:
            data["steps"] = None
        data.update(overrides)
        return TrainConfig.from_dict(data, source="overrides")
