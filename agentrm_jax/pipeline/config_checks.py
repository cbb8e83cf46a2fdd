"""Value checks shared by the pipelines' configs (`demo_config`, `reproduce_config`).

Every check raises `ConfigKeyError`, which carries the dotted key it is about ("rm.steps"), so a loader
can point at that key's line with `key_lines`. A config part subclasses `Part` for its `to_dict` (the
params that fingerprint a stage).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

__all__ = ["ConfigKeyError", "Part", "as_tuple", "check_beam", "check_bool", "check_choice", "check_float",
           "check_int", "check_seeds", "key_lines"]


class ConfigKeyError(ValueError):
    """A bad value; `key` is its dotted path ("rm.steps") so the loader can point at its line."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def check_int(key: str, value: Any, lo: int, *, none: bool = False) -> None:
    """`value` is an int >= lo (or None, with `none`)."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigKeyError(f"{key} must be an integer >= {lo}{' or null' if none else ''}, got {value!r}", key)


def check_float(key: str, value: Any, lo: float, hi: float | None = None) -> None:
    """`value` is a number in [lo, hi] (hi None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo or (hi is not None and value > hi):
        bound = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
        raise ConfigKeyError(f"{key} must be a number {bound}, got {value!r}", key)


def check_bool(key: str, value: Any) -> None:
    """`value` is true or false."""
    if not isinstance(value, bool):
        raise ConfigKeyError(f"{key} must be true or false, got {value!r}", key)


def check_choice(key: str, value: Any, options: tuple[str, ...]) -> None:
    """`value` is one of `options` ("rm.finetune must be head or lora, got 'x'")."""
    if value not in options:
        named = ", ".join(options[:-1]) + f" or {options[-1]}" if len(options) > 1 else options[0]
        raise ConfigKeyError(f"{key} must be {named}, got {value!r}", key)


def check_beam(key: str, value: Any) -> None:
    """`value` is a beam shape "WxK" as `agentrm eval` reads it (`evaluate.config.parse_methods`)."""
    from agentrm_jax.evaluate.config import parse_methods

    try:
        parse_methods(f"beam={value}")
    except ValueError as e:
        raise ConfigKeyError(f"{key}: {e}", key) from None


def check_seeds(key: str, value: Any) -> None:
    """`value` is a seed spec `agents.seeds.parse_seeds` reads ("0-9", a count, a list)."""
    from agentrm_jax.agents.seeds import parse_seeds

    try:
        parse_seeds(value, what=key)
    except ValueError as e:
        raise ConfigKeyError(str(e), key) from None


def as_tuple(obj, name: str) -> None:
    """In a frozen dataclass's __post_init__: a list given for field `name` becomes a tuple (hashable)."""
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


class Part:
    """Base of a config part: `to_dict` (the fingerprinted params: tuples as lists)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def key_lines(path: str | os.PathLike) -> dict[str, int]:
    """'key' and 'part.key' -> 1-based line, for the file's first two levels of mapping keys (first occurrence)."""
    import yaml

    node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    found: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return found
    for key, value in node.value:
        found.setdefault(str(key.value), key.start_mark.line + 1)
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                found.setdefault(f"{key.value}.{sub.value}", sub.start_mark.line + 1)
    return found
