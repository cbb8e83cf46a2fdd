"""Demonstrations -> SFT rows for the shared trainer (`training.data.collate` / `TrainBatches` take them as is).

    sft_messages(trajectory) -> (messages, target message indices)
    sft_row(trajectory, tokenizer, max_length) -> row dict, or None when not even its first step fits
    load_sft_examples(path, data_config, tokenizer, field=..., tasks=..., successful_only=...) -> [row, ...]

One sequence per trajectory: the chat the policy sees at its last turn (`agents.prompts.build_messages`:
system prompt, the env's worked example, the task, then every step as an assistant turn and its
observation as a user turn), without the final observation (nothing follows it to learn). Because
the template is prefix-stable (`sft.chat`), the context of step k in this sequence is exactly the
prompt `run_episode` gives the policy at turn k, so one forward pass trains every turn. Targets: the
replies of the trajectory's own steps (not the worked example's), minus the noisy steps of a noisy
demo (`meta["noisy_steps"]`): the model learns the recovery, not the deviation.

Row layout (the trainer's, `training.data`): input_ids int32 [T]; agent_mask bool [T] = the loss
mask (reply tokens, end-of-turn included: the label of position t is input_ids[t], predicted at
t - 1); target_index int32 [1] = T - 1; target float32 [1] = 0; label = 0; truncated.

Over-long demos (T > max_length): cut after the last whole step that fits (later steps are not
trained: every kept step keeps its exact play-time context, which dropping older steps would not);
a demo whose first step does not fit is left out. One warning counts both.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agentrm_jax.agents.collect import NOISY_STEPS
from agentrm_jax.agents.prompts import build_messages
from agentrm_jax.records import RecordError, Trajectory, iter_jsonl_lines
from agentrm_jax.sft.chat import render_chat

__all__ = ["NOISY_STEPS", "load_sft_examples", "sft_messages", "sft_row"]



def sft_messages(trajectory: Trajectory) -> tuple[list[dict[str, str]], list[int]]:
    """The chat of `trajectory` (its last turn's play-time context, final observation left out) and the
    indices of its assistant messages that are targets (the trajectory's steps, noisy ones excluded)."""
    messages = build_messages(trajectory, env_name=trajectory.task)
    messages = messages[:-1]  # the last observation: no reply follows it
    num_steps = len(trajectory.steps)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"][-num_steps:] if num_steps else []
    noisy = set((trajectory.meta or {}).get(NOISY_STEPS, ()))
    return messages, [index for step, index in enumerate(assistant) if step not in noisy]


def sft_row(trajectory: Trajectory, tokenizer, max_length: int | None = None) -> dict | None:
    """One training row (layout in the module docstring), ending with its last target reply; None when
    its first target step does not fit (or it has no target step)."""
    messages, targets = sft_messages(trajectory)
    seq = render_chat(messages, tokenizer, targets=targets)
    # the row ends with its last reply that fits: nothing after a reply is trained on
    kept = [end for _, end in seq.reply_spans if max_length is None or end <= max_length]
    if not kept:
        return None
    truncated = len(kept) < len(seq.reply_spans)
    ids, mask = seq.input_ids[:kept[-1]], seq.loss_mask[:kept[-1]]
    return {"input_ids": ids.astype(np.int32), "agent_mask": mask.astype(bool),
            "target_index": np.asarray([ids.shape[0] - 1], np.int32), "target": np.zeros((1,), np.float32),
            "label": np.asarray(0.0, np.float32), "truncated": np.asarray(truncated)}


def _known_envs() -> set[str]:
    from agentrm_jax.envs import REGISTRY  # importing the package registers every env

    return set(REGISTRY)


def load_sft_examples(path: str | os.PathLike, config, tokenizer, *, field: str = "train",
                      tasks: Sequence[str] = (), successful_only: bool = True) -> list[dict]:
    """SFT rows of every demo in a JSONL file of trajectories, in file order.

    config: the run's `DataConfig` (max_length). tasks: keep only demos of these envs (the per-task
    study); empty = all. successful_only: leave out demos that did not succeed (counted in a warning).
    Raises FileNotFoundError for a missing file and RecordError naming file:line for a malformed
    record, a trajectory with no steps or an unknown env; ValueError for a chat template that cannot
    be trained on (no assistant role, not prefix-stable).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (DataConfig.{field} should name a JSONL file of expert "
                                "trajectories, e.g. from `agentrm collect`)")
    known = _known_envs()
    unknown_tasks = sorted(set(tasks) - known)
    if unknown_tasks:
        raise ValueError(f"sft.tasks names unknown environments {unknown_tasks}; registered: {', '.join(sorted(known))}")
    rows, cut, dropped, failed, other = [], 0, 0, 0, 0
    for lineno, trajectory in iter_jsonl_lines(path, "trajectory"):
        if not trajectory.steps:
            raise RecordError("trajectory has no steps: there is nothing to train on", path=str(path), line=lineno,
                              field="steps")
        if trajectory.task not in known:
            raise RecordError(f"unknown environment {trajectory.task!r}; registered: {', '.join(sorted(known))}",
                              path=str(path), line=lineno, field="task")
        if tasks and trajectory.task not in tasks:
            other += 1
            continue
        if successful_only and trajectory.success is False:
            failed += 1
            continue
        row = sft_row(trajectory, tokenizer, config.max_length)
        if row is None:
            dropped += 1
            continue
        cut += bool(row["truncated"])
        rows.append(row)
    if cut or dropped:
        warnings.warn(f"{path}: {cut + dropped} demos exceeded max_length={config.max_length} tokens: {cut} were cut "
                      f"after their last whole step that fits (later steps not trained), {dropped} left out (their "
                      "first step alone does not fit)", stacklevel=2)
    if failed:
        warnings.warn(f"{path}: left out {failed} demos that did not succeed (successful_only)", stacklevel=2)
    if not rows:
        raise ValueError(f"{path}: no demo to train on ({other} of other tasks than {list(tasks)}, {failed} failed, "
                         f"{dropped} too long)" if (other or failed or dropped) else f"{path} holds no demos")
    return rows
