"""Pieces every judge shares: the record of one reply, checking a policy's replies, and judging prefixes.

`score_steps` of a judge scores every prefix steps[:i+1] of every trajectory
in one call: `all_prefixes` flattens them and `split_by_counts` cuts the flat
scores back into one array per trajectory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentrm_jax.records import Trajectory

__all__ = ["JudgeRecord", "all_prefixes", "as_list", "check_replies", "split_by_counts"]


def check_replies(replies: Any, contexts: int, n: int) -> list[list[str]]:
    """The judge's replies as `contexts` lists of n strings (anything else is a bug in the policy)."""
    replies = list(replies)
    if len(replies) != contexts or any(len(r) != n for r in replies):
        raise ValueError(f"the judge policy returned {[len(r) for r in replies]} replies for {contexts} "
                         f"contexts x n={n}")
    return [[r if isinstance(r, str) else "" for r in row] for row in replies]


def as_list(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """The trajectories as a list; a single Trajectory is refused (a common slip)."""
    if isinstance(trajectories, Trajectory):
        raise TypeError("pass a list of trajectories (got a single Trajectory)")
    return list(trajectories)


def all_prefixes(trajectories: list[Trajectory]) -> tuple[list[Trajectory], list[int]]:
    """Every prefix steps[:i+1] of every trajectory, flattened, and each trajectory's step count."""
    flat, counts = [], []
    for t in trajectories:
        counts.append(len(t.steps))
        flat.extend(t.prefix(i + 1) for i in range(len(t.steps)))
    return flat, counts


def split_by_counts(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Flat per-prefix values cut back into one float32 array per trajectory (`counts[i]` values each)."""
    out, start = [], 0
    for c in counts:
        out.append(np.asarray(values[start:start + c], np.float32).copy())
        start += c
    return out


@dataclasses.dataclass(frozen=True)
class JudgeRecord:
    """One judge reply: which item of the call it was about, the raw text and what was parsed from it.

    item: position of the judged trajectory (or prefix, or candidate group) in the call.
    sample: which of the n samples.
    value: the parsed rating (0-10) or chosen 0-based index; None = parse failure.
    """

    item: int
    sample: int
    text: str
    value: float | None
