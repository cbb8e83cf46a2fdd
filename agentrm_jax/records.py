"""Agent trajectories and their JSONL records: the data every stage reads and writes.

Below every stage (models, rewards, training, agents, search, explore, evaluate
all import it; it imports none of them). Record schema (one JSON object per line):

    trajectory  {"id", "task", "instruction", "steps": [{"thought", "action", "observation"}],
                 "success"?, "progress"?, "value"?}
    regression  a trajectory (often a prefix) with "value" in [0, 1]
    pairwise    {"id", "chosen": trajectory, "rejected": trajectory}

`render_messages` gives a trajectory as chat messages (instruction as the user
turn, each step as an assistant turn "Thought: ...\nAction: ..." followed by its
observation as a user turn): the prompt builder and the reward models'
rendering (`rewards.rendering`) both start from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


__all__ = [
    "PROGRESS_TRACE", "PreferencePair", "RecordError", "Step", "Trajectory", "append_jsonl", "format_step",
    "iter_jsonl", "iter_jsonl_lines", "read_jsonl", "read_object_lines", "read_objects", "render_messages",
    "write_jsonl",
]

# Key of `Trajectory.meta` holding the env's progress after each step (written by the episode
# loop, read by the oracle scorer).
PROGRESS_TRACE = "progress_trace"


class RecordError(ValueError):
    """A malformed record: the message names the file, line and field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ":".join(str(x) for x in (path, line) if x is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field {field!r})" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.path, self.line, self.field = path, line, field


@dataclass(frozen=True)
class Step:
    """One agent turn: what it thought, the action it took, what the environment answered."""

    thought: str = ""
    action: str = ""
    observation: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"thought": self.thought, "action": self.action, "observation": self.observation}


def _optional_number(record: dict, key: str, lo: float, hi: float, where: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where}{key} must be a finite number, got {value!r}", field=key)
    if not lo <= value <= hi:
        raise RecordError(f"{where}{key} must lie in [{lo}, {hi}], got {value!r}", field=key)
    return float(value)


@dataclass(frozen=True)
class Trajectory:
    """An agent episode (or a prefix of one) on a task.

    `instruction` is what the agent was told at the start (task goal and first
    observation); `steps` the turns since. `success` / `progress` are the
    environment's verdicts where known, `value` a regression target in [0, 1]
    (e.g. an MCTS value of the last state).
    """

    task: str
    instruction: str
    steps: tuple[Step, ...] = ()
    id: str | None = None
    success: bool | None = None
    progress: float | None = None
    value: float | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not isinstance(self.steps, tuple):
            object.__setattr__(self, "steps", tuple(self.steps))

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: Step, **updates) -> Trajectory:
        """A new trajectory with `step` added (and any other fields replaced)."""
        return dataclasses.replace(self, steps=self.steps + (step,), **updates)

    def prefix(self, num_steps: int) -> Trajectory:
        """The first `num_steps` steps, with the outcome fields cleared (a prefix has none)."""
        return dataclasses.replace(self, steps=self.steps[:num_steps], success=None, progress=None, value=None)

    def replace(self, **updates) -> Trajectory:
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "task": self.task, "instruction": self.instruction,
                                  "steps": [s.to_dict() for s in self.steps]}
        for key in ("success", "progress", "value"):
            if getattr(self, key) is not None:
                record[key] = getattr(self, key)
        if self.meta:
            record["meta"] = self.meta
        return record

    @classmethod
    def from_dict(cls, record: Any, *, where: str = "") -> Trajectory:
        """Parse a trajectory record; `where` prefixes field names in errors (e.g. "chosen.")."""
        if not isinstance(record, dict):
            raise RecordError(f"{where or 'record'} must be a JSON object, got {type(record).__name__}",
                              field=where.rstrip(".") or None)
        for key in ("task", "instruction"):
            if not isinstance(record.get(key), str):
                raise RecordError(f"{where}{key} is required and must be a string, got {record.get(key)!r}",
                                  field=where + key)
        steps_raw = record.get("steps", [])
        if not isinstance(steps_raw, list):
            raise RecordError(f"{where}steps must be a list, got {type(steps_raw).__name__}", field=where + "steps")
        steps = []
        for i, s in enumerate(steps_raw):
            if not isinstance(s, dict):
                raise RecordError(f"{where}steps[{i}] must be an object", field=f"{where}steps[{i}]")
            unknown = set(s) - {"thought", "action", "observation"}
            if unknown:
                raise RecordError(f"{where}steps[{i}] has unknown keys {sorted(unknown)}; "
                                  "expected thought, action, observation", field=f"{where}steps[{i}]")
            for key in ("thought", "action", "observation"):
                if not isinstance(s.get(key, ""), str):
                    raise RecordError(f"{where}steps[{i}].{key} must be a string, got {s.get(key)!r}",
                                      field=f"{where}steps[{i}].{key}")
            steps.append(Step(s.get("thought", ""), s.get("action", ""), s.get("observation", "")))
        success = record.get("success")
        if success is not None and not isinstance(success, bool):
            raise RecordError(f"{where}success must be true/false, got {success!r}", field=where + "success")
        rid = record.get("id")
        if rid is not None and not isinstance(rid, (str, int)):
            raise RecordError(f"{where}id must be a string or integer, got {rid!r}", field=where + "id")
        meta = record.get("meta", {})
        if not isinstance(meta, dict):
            raise RecordError(f"{where}meta must be an object", field=where + "meta")
        return cls(task=record["task"], instruction=record["instruction"], steps=tuple(steps),
                   id=None if rid is None else str(rid), success=success,
                   progress=_optional_number(record, "progress", 0.0, 1.0, where),
                   value=_optional_number(record, "value", 0.0, 1.0, where), meta=meta)


@dataclass(frozen=True)
class PreferencePair:
    """Two trajectories of the same task, `chosen` preferred over `rejected`."""

    chosen: Trajectory
    rejected: Trajectory
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "chosen": self.chosen.to_dict(), "rejected": self.rejected.to_dict()}

    @classmethod
    def from_dict(cls, record: Any) -> PreferencePair:
        if not isinstance(record, dict):
            raise RecordError("record must be a JSON object")
        for key in ("chosen", "rejected"):
            if key not in record:
                raise RecordError(f"pairwise record needs {key!r}", field=key)
        rid = record.get("id")
        return cls(Trajectory.from_dict(record["chosen"], where="chosen."),
                   Trajectory.from_dict(record["rejected"], where="rejected."), None if rid is None else str(rid))


# ---------------------------------------------------------------------------------------------- JSONL


def _parse(record: Any, kind: str):
    if kind == "trajectory":
        return Trajectory.from_dict(record)
    if kind == "pair":
        return PreferencePair.from_dict(record)
    raise ValueError(f"kind must be 'trajectory' or 'pair', got {kind!r}")


def iter_jsonl(path: str | os.PathLike, kind: str = "trajectory") -> Iterator[Trajectory | PreferencePair]:
    """Records of a JSONL file, parsed lazily; blank lines are skipped.

    Raises FileNotFoundError for a missing file and RecordError naming
    file:line and the field for a malformed row.
    """
    return (record for _, record in iter_jsonl_lines(path, kind))


def iter_jsonl_lines(path: str | os.PathLike, kind: str = "trajectory"
                     ) -> Iterator[tuple[int, Trajectory | PreferencePair]]:
    """(1-based line number, record) of every non-blank line; errors as in `iter_jsonl`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected JSONL {kind} records, one object per line)")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"invalid JSON ({e.msg} at column {e.colno})", path=str(path), line=lineno) from None
            try:
                parsed = _parse(record, kind)
            except RecordError as e:
                raise RecordError(str(e), path=str(path), line=lineno, field=e.field) from None
            yield lineno, parsed


def read_jsonl(path: str | os.PathLike, kind: str = "trajectory") -> list:
    """All records of a JSONL file (see `iter_jsonl`)."""
    return list(iter_jsonl(path, kind))


def _dumps(record) -> str:
    data = record.to_dict() if hasattr(record, "to_dict") else record
    return json.dumps(data, ensure_ascii=False)


def write_jsonl(path: str | os.PathLike, records: Iterable) -> None:
    """Write records (objects with `to_dict`, or plain dicts) atomically: a temp file, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(_dumps(r) + "\n")
    os.replace(tmp, path)


def append_jsonl(path: str | os.PathLike, records: Iterable) -> None:
    """Append records and flush them to disk (for runs that write results as they go)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(_dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def format_step(thought: str, action: str) -> str:
    """The assistant text of one step: "Thought: ...\\nAction: ..." (the thought line only when non-empty)."""
    return f"Thought: {thought}\nAction: {action}" if thought else f"Action: {action}"


def render_messages(trajectory: Trajectory, *, first_step: int = 0) -> list[dict[str, str]]:
    """Chat messages of a trajectory: instruction as user, each step as assistant then observation as user.

    `first_step` drops the steps before it (the over-long policy keeps the
    instruction and the most recent steps). The last step's observation is
    included when non-empty.
    """
    messages = [{"role": "user", "content": trajectory.instruction}]
    for step in trajectory.steps[first_step:]:
        messages.append({"role": "assistant", "content": format_step(step.thought, step.action)})
        if step.observation:
            messages.append({"role": "user", "content": step.observation})
    return messages


def read_objects(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The objects of an append-only JSONL file, in order (`read_object_lines` without line numbers)."""
    return [obj for _, obj in read_object_lines(path)]


def read_object_lines(path: str | os.PathLike, *, repair: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every JSON object line of an append-only JSONL file ([] if it does not exist).

    The reader of files that runs append to and resume from (eval rows, explore trees). A last
    line without its newline is a write cut short by a kill: it is kept if it parses as a complete
    object (repair=True adds the newline) and dropped otherwise (repair=True truncates it from the
    file, so the next append starts a fresh line). A malformed line anywhere else raises
    `RecordError` naming file:line. Blank lines are skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(f"not a JSON object ({e}); delete or fix this line to use the file",
                              path=str(path), line=lineno) from None
        if not isinstance(row, dict):
            raise RecordError("not a JSON object", path=str(path), line=lineno)
        rows.append((lineno, row))
    if tail.strip():
        try:
            row = json.loads(tail)
            complete = isinstance(row, dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if complete:
            rows.append((len(lines) + 1, row))
        if repair:
            with open(path, "r+b") as f:
                if complete:
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                else:
                    f.truncate(len(data) - len(tail))
    return rows
