"""AgentRM's held-in / held-out task split as data: `load_split(path=None) -> TaskSplit`.

The split lives in `configs/tasks/agentrm_split.yaml` (`DEFAULT_SPLIT`): which
registered env stands for each of the paper's nine tasks, whether the reward
model may train on it (held_in) or only meets it at test time (held_out), its
turn limit (above AgentBoard's average turns for the task), and the task seeds
of the train and test splits. Eval reports take their held-in / held-out
columns from it (`agentrm_jax.evaluate.summary`).

The file is read with PyYAML's node tree, so every mistake is reported as one
line naming `file:line`, the key and the fix (envs/ imports nothing else of
ours, so `yaml_config` is not used here: its lines stop at the top level).
Whether the named envs are registered is not checked here (the registry is
filled by importing env modules); tests/envs/test_split.py checks it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SPLIT", "ROLES", "SplitEntry", "TaskSplit", "load_split"]

DEFAULT_SPLIT = Path(__file__).resolve().parents[2] / "configs" / "tasks" / "agentrm_split.yaml"
ROLES = ("held_in", "held_out")
_ENTRY_KEYS = ("task", "avg_turns", "max_turns")
_SEED_KEYS = ("start", "stop")


@dataclass(frozen=True)
class SplitEntry:
    """One task of the split: the env that plays it and how long its episodes may be.

    env: a registered env name; role: "held_in" or "held_out"; task: the paper's task name ("ALFWorld");
    avg_turns: AgentBoard's average turns on the task (None where AgentBoard has no such task);
    max_turns: the episode's turn limit.
    """

    env: str
    role: str
    task: str
    avg_turns: float | None
    max_turns: int


@dataclass(frozen=True)
class TaskSplit:
    """The whole split: its entries (held-in first, file order) and the task seeds of each split."""

    entries: tuple[SplitEntry, ...]
    train_seeds: range
    test_seeds: range
    source: str = ""

    @property
    def envs(self) -> tuple[str, ...]:
        """Every env the split names."""
        return tuple(e.env for e in self.entries)

    @property
    def held_in(self) -> tuple[str, ...]:
        """The envs an RM may train on."""
        return tuple(e.env for e in self.entries if e.role == "held_in")

    @property
    def held_out(self) -> tuple[str, ...]:
        """The envs only evaluated on."""
        return tuple(e.env for e in self.entries if e.role == "held_out")

    def entry(self, env: str) -> SplitEntry | None:
        """The entry of `env` (None if the split does not name it)."""
        return next((e for e in self.entries if e.env == env), None)

    def role(self, env: str) -> str | None:
        """"held_in" / "held_out" for an env the split names, else None."""
        entry = self.entry(env)
        return None if entry is None else entry.role

    def with_roles(self, held_in: tuple[str, ...], held_out: tuple[str, ...], source: str = "") -> "TaskSplit":
        """This split regrouped: `held_in` and `held_out` (in that order) are its entries, keeping this split's
        task and turn limit for every env it names (an env it does not name gets task = env, no limits).
        For a run whose config moved families between the roles: its tables' role columns follow it."""
        entries = tuple(dataclasses.replace(self.entry(env), role=role) if self.entry(env) is not None else
                        SplitEntry(env=env, role=role, task=env, avg_turns=None, max_turns=0)
                        for role, envs in (("held_in", held_in), ("held_out", held_out)) for env in envs)
        return TaskSplit(entries, self.train_seeds, self.test_seeds, source=source or self.source)

    def seeds(self, split: str) -> range:
        """The task seeds of "train" or "test"."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.train_seeds if split == "train" else self.test_seeds


def _key_lines(node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """The 1-based line of every mapping key in a YAML node tree, by key path."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                path = (*prefix, key.value)
                lines[path] = key.start_mark.line + 1
                lines.update(_key_lines(value, path))
    return lines


class _Reader:
    """Validation helpers that name `file:line` and the dotted key in every error."""

    def __init__(self, source: str, lines: dict[tuple[str, ...], int]):
        self.source, self.lines = source, lines

    def fail(self, path: tuple[str, ...], message: str):
        line = next((self.lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.lines), None)
        where = f"{self.source}:{line}" if line else self.source
        raise ValueError(f"{where}: {'.'.join(path) + ': ' if path else ''}{message}")

    def mapping(self, value: Any, path: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping with keys {', '.join(keys)}, got {type(value).__name__}")
        for key in value:
            if key not in keys:
                self.fail((*path, str(key)), f"unknown key; known keys: {', '.join(keys)}")
        for key in keys:
            if key not in value:
                self.fail(path, f"missing key {key!r} (keys: {', '.join(keys)})")
        return value

    def integer(self, value: Any, path: tuple[str, ...], *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, got {value!r}")
        return value


def load_split(path: str | os.PathLike | None = None) -> TaskSplit:
    """Read a task split file (default `DEFAULT_SPLIT`); ValueError naming `file:line` for a bad one."""
    import yaml

    path = Path(DEFAULT_SPLIT if path is None else path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such task split file (see {DEFAULT_SPLIT} for the paper's)")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    read = _Reader(str(path), _key_lines(node))
    data = read.mapping(data, (), (*ROLES, "seeds"))
    entries, seen = [], {}
    for role in ROLES:
        group = data[role]
        if not isinstance(group, dict) or not group:
            read.fail((role,), "expected a mapping of env name -> {task, avg_turns, max_turns}")
        for env, fields in group.items():
            where = (role, str(env))
            if str(env) in seen:
                read.fail(where, f"named twice (also under {seen[str(env)]}); an env is held in or held out, not both")
            seen[str(env)] = role
            fields = read.mapping(fields, where, _ENTRY_KEYS)
            task, avg = fields["task"], fields["avg_turns"]
            if not isinstance(task, str) or not task.strip():
                read.fail((*where, "task"), f"expected the paper's task name, got {task!r}")
            if avg is not None and (isinstance(avg, bool) or not isinstance(avg, (int, float)) or avg <= 0):
                read.fail((*where, "avg_turns"), f"expected a positive number or null, got {avg!r}")
            max_turns = read.integer(fields["max_turns"], (*where, "max_turns"), minimum=1)
            if avg is not None and max_turns <= avg:
                read.fail((*where, "max_turns"), f"the turn limit {max_turns} must exceed avg_turns {avg}")
            entries.append(SplitEntry(env=str(env), role=role, task=task.strip(),
                                      avg_turns=None if avg is None else float(avg), max_turns=max_turns))
    seeds = read.mapping(data["seeds"], ("seeds",), ("train", "test"))
    ranges = {}
    for split in ("train", "test"):
        bounds = read.mapping(seeds[split], ("seeds", split), _SEED_KEYS)
        start = read.integer(bounds["start"], ("seeds", split, "start"), minimum=0)
        stop = read.integer(bounds["stop"], ("seeds", split, "stop"), minimum=0)
        if stop <= start:
            read.fail(("seeds", split, "stop"),
                      f"stop ({stop}) must exceed start ({start}): the seeds are range(start, stop)")
        ranges[split] = range(start, stop)
    return TaskSplit(entries=tuple(entries), train_seeds=ranges["train"], test_seeds=ranges["test"], source=str(path))
