"""Immutable agent trajectories, their JSONL records, and their rendering to tokens for a reward model.

Record schema (one JSON object per line; every stage reads and writes these):

    trajectory  {"id", "task", "instruction", "steps": [{"thought", "action", "observation"}],
                 "success"?, "progress"?, "value"?}
    regression  a trajectory (often a prefix) with "value" in [0, 1]
    pairwise    {"id", "chosen": trajectory, "rejected": trajectory}

Rendering for a reward model (`render_for_rm`): the tokenizer's chat template
with the task instruction as the user turn, then for each step an assistant
turn ("Thought: ...\\nAction: ...") followed by the observation as a user
turn. The returned `step_ends[i]` is the token index of the last token of step
i's action and `agent_mask` marks the assistant-content tokens (an implicit PRM
sums its log-ratios over step i's tokens, `step_starts[i]..step_ends[i]`);
`prefix_ends[i]` is the last token of the rendering of the first i + 1 steps
(after step i's observation), where an explicit RM reads step i's score: the
token at which that prefix, scored as a whole trajectory, has its score read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PreferencePair", "RecordError", "RenderedTrajectory", "Step", "Trajectory", "append_jsonl",
    "format_step", "iter_jsonl", "iter_jsonl_lines", "read_jsonl", "render_batch_for_rm", "render_for_rm", "render_messages", "write_jsonl",
]


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


# ------------------------------------------------------------------------------------------ rendering


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


@dataclass(frozen=True)
class RenderedTrajectory:
    """A trajectory as token ids for a reward model.

    input_ids:  int32 [T]
    agent_mask: bool [T], True on the tokens of the assistant turns' content
    step_ends:  int32 [S], index of the last token of each step's action;
                -1 for steps dropped by truncation
    step_starts: int32 [S], index of the first token of each step's content; -1 when dropped
    prefix_ends: int32 [S], index of the last token of the rendering of steps 0..i (after step
                i's observation): `input_ids[:prefix_ends[i] + 1]` are the tokens of
                `render_for_rm(trajectory.prefix(i + 1))`; -1 when dropped or cut
    first_step: how many leading steps were dropped to fit `max_length`
    truncated:  whether anything was cut to fit `max_length`
    cut_tokens: how many tokens were cut from the left (the instruction's start with them) when the
                instruction and the last step alone did not fit; 0 otherwise
    """

    input_ids: np.ndarray
    agent_mask: np.ndarray
    step_ends: np.ndarray
    step_starts: np.ndarray
    prefix_ends: np.ndarray
    first_step: int = 0
    truncated: bool = False
    cut_tokens: int = 0

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def _char_spans(text: str, messages: Sequence[dict[str, str]]) -> list[tuple[int, int]]:
    """(start, end) character span of each message's content in the rendered chat text."""
    spans, cursor = [], 0
    for m in messages:
        content = m["content"]
        pos = text.find(content, cursor) if content else cursor
        if pos < 0:  # templates that trim content (Llama 3 does)
            content = content.strip()
            pos = text.find(content, cursor) if content else cursor
        if pos < 0:
            raise ValueError("the chat template changed a message's content; cannot locate step boundaries "
                             f"(message {m['content'][:60]!r})")
        end = pos + len(content)
        spans.append((pos, end))
        cursor = end
    return spans


def _prefix_end(tokenizer, trajectory: Trajectory, first_step: int, step: int, text: str,
                offsets: np.ndarray, content_end: int) -> int:
    """Token index where the rendering of steps first_step..step ends inside the whole rendering.

    That rendering's text is a prefix of the whole one for templates that render each turn on
    its own (ChatML, Llama 3): its end is then a token boundary. For a template that rewrites
    earlier turns it is not, and the step's last content token (`content_end`) stands in.
    """
    if step == len(trajectory.steps) - 1:
        return len(offsets) - 1
    prefix = tokenizer.apply_chat_template(
        render_messages(trajectory.prefix(step + 1), first_step=first_step), tokenize=False)
    if text.startswith(prefix):
        ends = np.flatnonzero((offsets[:, 1] == len(prefix)) & (offsets[:, 1] > offsets[:, 0]))
        if ends.size and (ends[-1] + 1 == len(offsets) or offsets[ends[-1] + 1, 0] >= len(prefix)):
            return int(ends[-1])
    return content_end


def _render_once(tokenizer, trajectory: Trajectory, first_step: int, *, with_prefixes: bool = True
                 ) -> RenderedTrajectory:
    messages = render_messages(trajectory, first_step=first_step)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    spans = _char_spans(text, messages)
    agent_mask = np.zeros(ids.shape, dtype=bool)
    num_steps = len(trajectory.steps)
    ends = np.full((num_steps,), -1, dtype=np.int32)
    starts = np.full((num_steps,), -1, dtype=np.int32)
    prefix_ends = np.full((num_steps,), -1, dtype=np.int32)
    real = offsets[:, 1] > offsets[:, 0]
    step = first_step - 1
    for m, (lo, hi) in zip(messages, spans):
        if m["role"] == "assistant":
            step += 1
            # tokens overlapping [lo, hi): content may merge with a template token at either edge
            where = np.flatnonzero((offsets[:, 1] > lo) & (offsets[:, 0] < hi) & real)
            if where.size == 0:  # empty action and thought: point at the token before the content
                before = np.flatnonzero(offsets[:, 1] <= lo)
                where = before[-1:] if before.size else np.array([0])
            agent_mask[where] = True
            starts[step], ends[step] = where[0], where[-1]
        if step >= first_step and with_prefixes:  # the step's last message so far: its action or observation
            inside = np.flatnonzero((offsets[:, 0] < hi) & real)
            prefix_ends[step] = inside[-1] if inside.size else ends[step]
    if with_prefixes:
        for step in range(first_step, num_steps):
            prefix_ends[step] = _prefix_end(tokenizer, trajectory, first_step, step, text, offsets,
                                            int(prefix_ends[step]))
    return RenderedTrajectory(ids, agent_mask, ends, starts, prefix_ends, first_step)


def render_for_rm(trajectory: Trajectory, tokenizer, *, max_length: int | None = None) -> RenderedTrajectory:
    """Token ids, agent mask, step and prefix end indices of a trajectory (see the module docstring).

    Over-long policy: when the rendering exceeds `max_length` tokens, the
    oldest steps are dropped (the instruction and the most recent steps are
    kept) until it fits; their `step_ends` / `prefix_ends` are -1. If the
    instruction and the last step alone do not fit, the tokens are cut from
    the left to the last `max_length` (`cut_tokens` > 0: the instruction's
    start is lost, and steps whose action end or prefix end was cut get -1).
    `render_batch_for_rm` warns once, saying what was kept.
    """
    rendered = _render_once(tokenizer, trajectory, 0)
    if max_length is None or rendered.length <= max_length:
        return rendered
    # Drop steps from the front; each try re-renders (templates are not prefix-stable at the edges).
    lo, hi = 1, len(trajectory.steps) - 1  # smallest first_step that fits and keeps the last step
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        if _render_once(tokenizer, trajectory, mid, with_prefixes=False).length <= max_length:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return dataclasses.replace(_render_once(tokenizer, trajectory, best), truncated=True)
    last = _render_once(tokenizer, trajectory, len(trajectory.steps) - 1 if trajectory.steps else 0)
    cut = last.length - max_length

    def shift(index):
        return np.where(index >= cut, index - cut, -1).astype(np.int32)

    return RenderedTrajectory(last.input_ids[cut:], last.agent_mask[cut:], shift(last.step_ends),
                              np.where(last.step_starts >= cut, last.step_starts - cut,
                                       np.where(last.step_ends >= cut, 0, -1)).astype(np.int32),
                              shift(last.prefix_ends), last.first_step, truncated=True, cut_tokens=cut)


def _truncation_warning(rendered: Sequence[RenderedTrajectory], max_length: int | None) -> str | None:
    """What `render_batch_for_rm` says about the trajectories it cut, by what each kept; None if none."""
    dropped = [r for r in rendered if r.truncated and not r.cut_tokens]
    cut = [r for r in rendered if r.cut_tokens]
    if not dropped and not cut:
        return None
    parts = []
    if dropped:
        kept = sorted({len(r.step_ends) - r.first_step for r in dropped})
        steps = f"{kept[0]} step{'s' * (kept[0] != 1)}" if len(kept) == 1 else f"{kept[0]}-{kept[-1]} steps"
        parts.append(f"{len(dropped)} kept the instruction and the last {steps} (older steps get no step score)")
    if cut:
        parts.append(f"{len(cut)} kept only the last {max_length} tokens, so the instruction was cut "
                     "(the instruction and the last step alone do not fit)")
    return (f"{len(dropped) + len(cut)} of {len(rendered)} trajectories exceeded max_length={max_length} "
            f"tokens; " + "; ".join(parts))


def render_batch_for_rm(trajectories: Sequence[Trajectory], tokenizer, *,
                        max_length: int | None = None) -> list[RenderedTrajectory]:
    """`render_for_rm` for each trajectory; one warning counts the trajectories that were cut and says
    what each kept (the instruction and its latest steps, or only the last max_length tokens)."""
    rendered = [render_for_rm(t, tokenizer, max_length=max_length) for t in trajectories]
    message = _truncation_warning(rendered, max_length)
    if message:
        warnings.warn(message, stacklevel=2)
    return rendered
