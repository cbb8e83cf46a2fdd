"""The config of `agentrm sft`: a `TrainConfig` (kind "sft", the same file layout as `agentrm train`'s) plus
its `sft:` section, `SFTSection`.

    read_sft_config(path, overrides) -> (TrainConfig, SFTSection)

Keys of the `sft:` section are checked like every other key (unknown ones named file:line); the rest
of the file is a train config, read by `TrainConfig.from_dict` with its line numbers. `kind` may be
left out (it is "sft") but no other kind is accepted.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from agentrm_jax.yaml_config import check_keys, read_mapping

__all__ = ["SFT_CONFIG_FILE", "SFTSection", "read_sft_config"]

SFT_CONFIG_FILE = "sft_config.json"  # the sft section, beside train_config.json in the run directory


def _names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"sft.{what} must be a list of env names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class SFTSection:
    """What policy SFT adds to a train config.

    tasks: train only on demos of these envs (the per-task transfer study; `--per-task ENV`); empty = all.
    successful_only: leave out demos that did not succeed.
    eval_envs: envs whose greedy episodes are played at every eval point (outputs.eval_every and the
      end) with the model as trained so far; success and progress go to metrics.jsonl. Empty = none.
    eval_seeds: task seeds per env (0..eval_seeds-1 of eval_split). eval_split: "test" or "train".
    eval_max_turns: turn limit of those episodes (default: each env's own).
    max_new_tokens: the policy's reply budget, in eval and in the policy the run becomes.
    """

    tasks: tuple[str, ...] = ()
    successful_only: bool = True
    eval_envs: tuple[str, ...] = ()
    eval_seeds: int = 4
    eval_split: str = "test"
    eval_max_turns: int | None = None
    max_new_tokens: int = 96
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "tasks", _names(self.tasks, "tasks"))
        object.__setattr__(self, "eval_envs", _names(self.eval_envs, "eval_envs"))
        if not isinstance(self.successful_only, bool):
            raise ValueError(f"sft.successful_only must be true or false, got {self.successful_only!r}")
        for name, lo in (("eval_seeds", 1), ("max_new_tokens", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"sft.{name} must be an integer >= {lo}, got {value!r}")
        if self.eval_max_turns is not None and (not isinstance(self.eval_max_turns, int) or self.eval_max_turns < 1):
            raise ValueError(f"sft.eval_max_turns must be an integer >= 1 or null, got {self.eval_max_turns!r}")
        if self.eval_split not in ("train", "test"):
            raise ValueError(f"sft.eval_split must be train or test, got {self.eval_split!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


_KEYS = [f.name for f in dataclasses.fields(SFTSection) if f.name != "extra"]


def sft_section(values: dict[str, Any] | None, *, source: str = "sft", lines: dict[str, int] | None = None
                ) -> SFTSection:
    """An `SFTSection` from a mapping; an unknown key or a bad value names `source` (and the line)."""
    values = dict(values or {})
    check_keys(values, _KEYS, source=source, what="sft section", lines=lines)
    try:
        return SFTSection(**values)
    except ValueError as e:
        key = next((k for k in values if f"sft.{k} " in str(e)), None)
        where = f"{source}:{lines[key]}" if lines and key in lines else source
        raise ValueError(f"{where}: {e}") from None


def read_sft_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None,
                    sft_overrides: dict[str, Any] | None = None):
    """(TrainConfig, SFTSection) of a YAML file, with train overrides (flat names, as `agentrm train`'s
    flags) and sft overrides applied (None values are ignored)."""
    from agentrm_jax.training.config import TrainConfig, _yaml_lines

    data, _ = read_mapping(path, "sft config", "configs/sft_cpu.yaml")
    lines = _yaml_lines(path)
    section = data.pop("sft", None) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}:{lines.get('sft', '?')}: sft is a section (a mapping of its keys), got {section!r}")
    kind = data.setdefault("kind", "sft")
    if kind != "sft":
        raise ValueError(f"{path}:{lines.get('kind', '?')}: an sft config has kind sft (or none), got {kind!r}; "
                         "reward models train with `agentrm train`")
    config = TrainConfig.from_file_mapping(data, path, overrides)
    section.update({k: v for k, v in (sft_overrides or {}).items() if v is not None})
    sft_lines = {k.split(".", 1)[1]: v for k, v in lines.items() if k.startswith("sft.")}
    return config, sft_section(section, source=str(path), lines=sft_lines)
