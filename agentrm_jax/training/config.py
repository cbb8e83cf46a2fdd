"""`TrainConfig`: everything `agentrm train` needs, read from YAML and overridden by flags.

A frozen dataclass of run-wide settings and sections (`training.sections`); every field is checked when
the config is built (before any model is loaded or anything compiled), and an unknown or bad YAML key
is an error naming `file:line`, nested keys included. Example (configs/train_cpu.yaml, shortened):

    model: bundled              # bundled | HF_DIR | FILE.gguf: the backbone
    kind: explicit              # explicit (value head, regression) | implicit (beta log pi/pi_ref) | pairwise (BT)
    finetune: lora              # lora | full | head
    steps: 60
    mesh: data=1,fsdp=1,tensor=1
    out: runs/rm_cpu
    data:
      train: configs/data/smollm2_rollouts.jsonl
      target: progress          # record field with the target / label: value | progress | success
      batch_size: 8
    optimizer:
      lr: 3.0e-4
    compute:                    # how the forward runs (never what it computes)
      remat: none               # none | full | dots_saveable

Every field also has a flat name, the spelling of the CLI flags, of override dicts
(`TrainConfig.from_yaml(path, {"steps": 8, "lr": 1e-3})`) and of the flat train_config.json /
config.json that runs written before the sections kept: a section field's flat name is its own
(`lr` is `optimizer.lr`, `train` is `data.train`) except for the adapters (`lora_rank`, `lora_alpha`,
`lora_targets`). `TrainConfig(...)` and `from_dict` take flat names, sections or both, and
`config.lr` reads `config.optimizer.lr`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from agentrm_jax.training.sections import (FINETUNE, PRECISIONS, ComputeSection, DataConfig, LoRASection, MeshShape,
                                           ObjectiveSection, OptimizerSection, OutputSection, check_number)
from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["FINETUNE", "HEAD_INITS", "PRECISIONS", "MeshShape", "TrainConfig", "flat_config"]

HEAD_INITS = ("normal", "mean")
_SECTIONS = {"data": DataConfig, "objective": ObjectiveSection, "lora": LoRASection,
             "optimizer": OptimizerSection, "outputs": OutputSection, "compute": ComputeSection}
# Run-wide settings that the data section holds (records are read by kind, shuffled by seed): in the dict
# and YAML form they sit at the top level, beside model and finetune.
_HOISTED = ("kind", "seed")
_TOP = ("model", "finetune", "head_mlp", "head_init", "precision", "mesh", "steps", "epochs", "out")

# flat name -> (section, field); section None: a field of TrainConfig itself
_FLAT: dict[str, tuple[str | None, str]] = {
    **{name: (None, name) for name in _TOP},
    **{name: ("data", name) for name in ("kind", "seed", "train", "eval", "target", "batch_size", "max_length",
                                         "min_length_bucket")},
    **{name: ("objective", name) for name in ("loss", "beta", "margin")},
    "lora_rank": ("lora", "rank"), "lora_alpha": ("lora", "alpha"), "lora_targets": ("lora", "targets"),
    **{name: ("optimizer", name) for name in ("lr", "warmup_steps", "min_lr_ratio", "weight_decay", "b1", "b2",
                                              "grad_clip", "grad_accum")},
    **{name: ("outputs", name) for name in ("save_every", "keep", "eval_every", "log_every")},
    **{name: ("compute", name) for name in ("remat", "scan_layers", "attention", "device", "device_memory_gb",
                                            "architecture")},
}
_FLAT_OF = {path: flat for flat, path in _FLAT.items()}
_FLOATS = ("lr", "beta", "margin", "lora_alpha", "min_lr_ratio", "weight_decay", "b1", "b2", "grad_clip", "epochs",
           "device_memory_gb")
_PATHS = ("model", "train", "eval", "out")


def _dotted(flat: str) -> str:
    section, name = _FLAT[flat]
    return name if section is None or flat in _HOISTED else f"{section}.{name}"


def _yaml_lines(path: str | os.PathLike) -> dict[str, int]:
    """1-based line of every top-level key and of every key of a top-level section ("optimizer.lr")."""
    import yaml

    with open(path, encoding="utf-8") as f:
        node = yaml.compose(f.read(), Loader=yaml.SafeLoader)
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            lines[key.value] = key.start_mark.line + 1
            if isinstance(value, yaml.MappingNode):
                for sub, _ in value.value:
                    if isinstance(sub, yaml.ScalarNode):
                        lines[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


def flat_config(data: dict[str, Any], *, source: str = "config", lines: dict[str, int] | None = None
                ) -> tuple[dict[str, Any], dict[str, int]]:
    """(values by flat name, their lines) of a train-config dict: nested (sections), flat (the old
    layout) or mixed. `lines` maps top-level keys and "section.key" to lines of `source`.
    Unknown keys and a field given twice are ValueErrors naming `source:line`."""
    lines = lines or {}

    def where(key: str) -> str:
        return f"{source}:{lines[key]}" if key in lines else source

    flat: dict[str, Any] = {}
    flat_lines: dict[str, int] = {}

    def put(name: str, value: Any, key: str) -> None:
        if name in flat:
            raise ValueError(f"{where(key)}: {_dotted(name)} is given twice (as {name} and as {_dotted(name)})")
        flat[name] = value
        if key in lines:
            flat_lines[name] = lines[key]

    for key, value in data.items():
        if key in _SECTIONS:
            if value is None:
                continue  # an empty section: its defaults
            if not isinstance(value, dict):
                raise ValueError(f"{where(key)}: {key} is a section (a mapping of its keys), got {value!r}")
            hoisted = [sub for sub in value if key == "data" and sub in _HOISTED]
            if hoisted:
                raise ValueError(f"{where(f'{key}.{hoisted[0]}')}: {hoisted[0]} is a top-level key of a train config "
                                 f"(beside model and finetune), not a key of {key}")
            known = [f.name for f in dataclasses.fields(_SECTIONS[key]) if key != "data" or f.name not in _HOISTED]
            check_keys(value, known, source=source, what=f"train config section {key!r}",
                       lines={sub: lines[f"{key}.{sub}"] for sub in value if f"{key}.{sub}" in lines}
                       or ({sub: lines[key] for sub in value} if key in lines else None))
            for sub, sub_value in value.items():
                put(_FLAT_OF[(key, sub)], sub_value, f"{key}.{sub}")
        elif key in _FLAT:
            put(key, value, key)
        else:
            check_keys({key: value}, (*_TOP, *_HOISTED, *_SECTIONS), source=source, what="train config",
                       lines=lines)
    return flat, flat_lines


@dataclass(frozen=True, kw_only=True, init=False)
class TrainConfig:
    """A reward-model training run.

    model: the backbone: "bundled" (SmolLM2-135M-Instruct GGUF), an HF directory or a .gguf file.
    kind (held by `data`): "explicit" (value head regressed on `data.target` at the trajectory's last
      token), "implicit" (beta * log pi_theta/pi_ref summed over agent tokens, BCE to the outcome label)
      or "pairwise" (value head, Bradley-Terry on chosen/rejected pairs).
    finetune: "lora" (adapters on `lora.targets` + the head), "full" (every weight), "head" (value head only;
      not for implicit).
    head_mlp: 0 = linear value head (exportable to transformers); >0 = an MLP head of that width.
    head_init: "normal" (weights N(0, 0.02) as transformers initialises a classifier, no bias: exportable
      to its `score` layer) or "mean" (explicit only: output weights zero and a bias at the training
      targets' mean, its logit for BCE, so the head starts as the best constant predictor; a frozen
      backbone's final hidden states have norms of tens, so a normal head starts about 1 off a [0, 1]
      target and a short run spends its steps undoing that; the bias is kept in our format only).
    precision: "float32", or "bf16" (bfloat16 compute with float32 master weights and optimizer state).
    mesh: device mesh sizes (data, fsdp, tensor); their product must equal the device count.
    seed (held by `data`): head / adapter init and data order.
    steps / epochs: how long to train; give one (epochs: passes over `data.train`, rounded up to whole steps).
    out: run directory (checkpoints/, metrics.jsonl, train_config.json); rerunning with the same `out` resumes.
    data: `DataConfig`: train / eval JSONL records (trajectories; pairs for pairwise; eval optional), target
      (record field holding the target / label: "value", "progress", "success"; None = "value" for explicit,
      "success" for implicit), batch_size (records or pairs per optimizer step, over all devices and hosts),
      max_length (token budget per trajectory; older steps are dropped beyond it, with a warning),
      min_length_bucket.
    objective, lora, optimizer, outputs, compute: see `ObjectiveSection`, `LoRASection`, `OptimizerSection`,
      `OutputSection`, `ComputeSection`.

    Build it from flat names (`TrainConfig(train="a.jsonl", lr=1e-3)`), sections
    (`TrainConfig(data=DataConfig(kind="explicit", train="a.jsonl"), optimizer=OptimizerSection(lr=1e-3))`)
    or both (flat names apply on top of the sections given).
    """

    model: str = "bundled"
    finetune: str = "lora"
    head_mlp: int = 0
    head_init: str = "normal"
    precision: str = "float32"
    mesh: MeshShape = MeshShape()
    steps: int | None = 100
    epochs: float | None = None
    out: str = "runs/rm"
    data: DataConfig
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    lora: LoRASection = field(default_factory=LoRASection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    outputs: OutputSection = field(default_factory=OutputSection)
    compute: ComputeSection = field(default_factory=ComputeSection)

    def __init__(self, **values):
        sections = {name: values.pop(name) for name in _SECTIONS if name in values}
        unknown = sorted(set(values) - set(_FLAT))
        if unknown:
            raise TypeError(f"TrainConfig got unknown fields {unknown}; the fields are {', '.join(_TOP)}, the "
                            f"sections {', '.join(_SECTIONS)}, and the flat names {', '.join(sorted(_FLAT))}")
        top: dict[str, Any] = {}
        changes: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        for flat, value in values.items():
            section, name = _FLAT[flat]
            (top if section is None else changes[section])[name] = value
        for f in dataclasses.fields(self):
            if f.name in _SECTIONS:
                value = self._section(f.name, sections.get(f.name), changes[f.name])
            else:
                value = top.get(f.name, f.default)
            object.__setattr__(self, f.name, value)
        self.__post_init__()

    @staticmethod
    def _section(name: str, given, changes: dict[str, Any]):
        cls = _SECTIONS[name]
        if given is None:
            if name == "data":
                if not changes.get("train"):
                    raise ValueError("TrainConfig.train must name a JSONL file of training records (--data PATH)")
                changes = {"kind": "explicit", **changes}
            return cls(**changes)
        if not isinstance(given, cls):
            raise ValueError(f"TrainConfig.{name} must be a {cls.__name__}, got {given!r}")
        return dataclasses.replace(given, **changes) if changes else given

    def __post_init__(self):
        def fail(name, message):
            raise ValueError(f"TrainConfig.{name} {message}")

        def int_at_least(name, value, lo):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                fail(name, f"must be an integer >= {lo}, got {value!r}")

        if not isinstance(self.model, str) or not self.model:
            fail("model", "must name the backbone: bundled, an HF directory or a .gguf file")
        if self.finetune not in FINETUNE:
            fail("finetune", f"must be one of {', '.join(FINETUNE)}, got {self.finetune!r}")
        if self.finetune == "head" and self.kind in ("implicit", "sft"):
            fail("finetune", f"'head' has no meaning for kind {self.kind!r} (a causal LM has no head); use lora or full")
        int_at_least("head_mlp", self.head_mlp, 0)
        if self.head_init not in HEAD_INITS:
            fail("head_init", f"must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        if self.head_init == "mean" and self.kind != "explicit":
            fail("head_init", f"'mean' starts a regression head at its targets' mean; kind {self.kind!r} has "
                              "no such targets (use normal)")
        if (self.steps is None) == (self.epochs is None):
            fail("steps", f"give exactly one of steps and epochs (steps={self.steps}, epochs={self.epochs})")
        if self.steps is not None:
            int_at_least("steps", self.steps, 1)
        if self.epochs is not None:
            check_number("TrainConfig", "epochs", self.epochs, lo=0, lo_open=True)
        if self.precision not in PRECISIONS:
            fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.mesh, MeshShape):
            fail("mesh", f"must be a MeshShape, got {self.mesh!r}")
        if not isinstance(self.out, str) or not self.out:
            fail("out", "must name the run directory")
        batch_size, accum = self.data.batch_size, self.optimizer.grad_accum
        if batch_size % accum:
            fail("optimizer.grad_accum", f"must divide data.batch_size={batch_size}, got {accum}")
        micro_rows = batch_size // accum
        if micro_rows % self.mesh.batch_shards:
            fail("data.batch_size", f"/ optimizer.grad_accum = {micro_rows} records per micro-batch must be "
                                    f"divisible by mesh data x fsdp = {self.mesh.batch_shards}")

    def data_config(self) -> DataConfig:
        """The data pipeline's view of this config: the data section itself (`config.data`), no copy."""
        return self.data

    @property
    def kind(self) -> str:
        """The RM kind (held by the data section, which reads the records by it)."""
        return self.data.kind

    @property
    def seed(self) -> int:
        """Head / adapter init and data-order seed (held by the data section)."""
        return self.data.seed

    def __getattr__(self, name: str):
        # Only reached when `name` is no attribute: the flat name of a section field (config.lr).
        section, field_name = _FLAT.get(name, (None, None))
        if section is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(object.__getattribute__(self, section), field_name)

    # ------------------------------------------------------------------------------------------ I/O

    def to_dict(self) -> dict[str, Any]:
        """Plain values (YAML / JSON) in the nested layout, the form `from_dict` reads back."""
        d: dict[str, Any] = {"model": self.model, "kind": self.kind, "finetune": self.finetune,
                             "head_mlp": self.head_mlp, "head_init": self.head_init, "precision": self.precision,
                             "mesh": str(self.mesh),
                             "seed": self.seed, "steps": self.steps, "epochs": self.epochs, "out": self.out}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            d[name] = {k: v for k, v in section.items() if name != "data" or k not in _HOISTED}
        d["lora"]["targets"] = list(self.lora.targets)
        return d

    def to_flat_dict(self) -> dict[str, Any]:
        """Plain values by flat name (the layout of runs written before the sections)."""
        return flat_config(self.to_dict())[0]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config",
                  lines: dict[str, int] | None = None) -> TrainConfig:
        """Build from plain values, nested or flat (`flat_config`); unknown keys and bad values are errors
        naming `source` (and the line: `lines` maps top-level keys and "section.key")."""
        flat, flat_lines = flat_config(data, source=source, lines=lines)
        return cls._from_flat(flat, source, flat_lines)

    @classmethod
    def _from_flat(cls, flat: dict[str, Any], source: str, lines: dict[str, int]) -> TrainConfig:
        values = dict(flat)
        if values.get("epochs") is not None and "steps" not in values:
            values["steps"] = None  # epochs replaces the default step count
        try:
            if "mesh" in values:
                values["mesh"] = MeshShape.parse(values["mesh"])
            if "lora_targets" in values:
                targets = values["lora_targets"]
                values["lora_targets"] = tuple([targets] if isinstance(targets, str) else targets or ())
            for name in _FLOATS:
                if isinstance(values.get(name), int) and not isinstance(values[name], bool):
                    values[name] = float(values[name])
                elif isinstance(values.get(name), str):  # PyYAML reads 1e-4 (no dot: YAML 1.1) as a string
                    try:
                        values[name] = float(values[name])
                    except ValueError:
                        pass  # left for the checks to reject, naming the field
            for name in _PATHS:
                if isinstance(values.get(name), os.PathLike):
                    values[name] = os.fspath(values[name])
            return cls(**values)
        except (ValueError, TypeError) as e:
            key = next((k for k in values if _names(str(e), k)), None)
            where = f"{source}:{lines[key]}" if key in lines else source
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read a YAML file, then apply `overrides` (flat names or sections; None values are ignored)."""
        data, _ = read_mapping(path, "train config", "configs/train_cpu.yaml")
        return cls.from_file_mapping(data, path, overrides)

    @classmethod
    def from_file_mapping(cls, data: dict[str, Any], path: str | os.PathLike,
                          overrides: dict[str, Any] | None = None) -> TrainConfig:
        """`from_yaml` of a mapping already read from `path` (errors name path:line); `overrides` win, and
        a `steps` override drops the file's `epochs` and vice versa."""
        flat, lines = flat_config(data, source=str(path), lines=_yaml_lines(path))
        overrides, _ = flat_config({k: v for k, v in (overrides or {}).items() if v is not None}, source="overrides")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "steps" in overrides:
            flat.pop("epochs", None)
        if "epochs" in overrides:
            flat.pop("steps", None)
        flat.update(overrides)
        return cls._from_flat(flat, str(path), {k: v for k, v in lines.items() if k not in overrides})

    def replace(self, **overrides) -> TrainConfig:
        """A copy with some fields changed, by flat name (None leaves a field)."""
        data = self.to_flat_dict()
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "steps" in overrides:
            data["epochs"] = None
        if "epochs" in overrides:
            data["steps"] = None
        data.update(overrides)
        return TrainConfig.from_dict(data, source="overrides")


def _names(message: str, flat: str) -> bool:
    """Whether an error message is about the field of flat name `flat`."""
    section, name = _FLAT[flat]
    spellings = [f"TrainConfig.{flat} "]
    if section is not None:
        spellings.append(f"TrainConfig.{section}.{name} ")
    if section == "data":
        spellings.append(f"DataConfig.{name} ")
    return any(s in message for s in spellings) or message.startswith(flat)
