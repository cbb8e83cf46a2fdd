"""Reading YAML configs with line numbers, shared by `agentrm eval` and `agentrm train`.

`read_mapping(path, what)` returns the top-level mapping and the line of each
key, so an unknown or bad key is reported as `file:line` (`check_keys`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["check_keys", "read_mapping"]


def read_mapping(path: str | os.PathLike, what: str, example: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(data, lines) of a YAML file whose top level is a mapping; `lines[key]` is the 1-based line of `key`.

    what: the config's name in messages ("eval config"); example: a file to point the user at.
    Raises FileNotFoundError for a missing file and ValueError naming the file for invalid YAML.
    """
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what} (see {example} for an example)")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    lines = {}
    if isinstance(node, yaml.MappingNode):
        lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} is a mapping of keys, got {type(data).__name__}")
    return data, lines


def check_keys(data: dict[str, Any], known: Iterable[str], *, source: str, what: str,
               lines: dict[str, int] | None = None) -> None:
    """Raise ValueError naming `source:line` and the key for the first key not in `known`."""
    known = set(known)
    for key in data:
        if key not in known:
            where = f"{source}:{lines[key]}" if lines and key in lines else source
            raise ValueError(f"{where}: unknown key {key!r} in {what}; known keys: {', '.join(sorted(known))}")
