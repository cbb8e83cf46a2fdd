"""Trajectories rendered to tokens for a reward model (`render_for_rm`).

The tokenizer's chat template over `records.render_messages`: the task
instruction as the user turn, then for each step an assistant turn
("Thought: ...\nAction: ...") followed by the observation as a user turn. The
returned `step_ends[i]` is the token index of the last token of step i's action
and `agent_mask` marks the assistant-content tokens (an implicit PRM sums its
log-ratios over step i's tokens, `step_starts[i]..step_ends[i]`);
`prefix_ends[i]` is the last token of the rendering of the first i + 1 steps
(after step i's observation), where an explicit RM reads step i's score: the
token at which that prefix, scored as a whole trajectory, has its score read.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agentrm_jax.records import Trajectory, render_messages

__all__ = ["RenderedTrajectory", "render_batch_for_rm", "render_for_rm"]


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
