"""The listwise judge: the candidates for one task are shown together, numbered, and the judge names the best.

Its scores are 1.0 for the pick (`parse_choice`) and 0.0 for the rest, so
they are comparable only among the trajectories of one call; when the reply
cannot be parsed every candidate gets 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agentrm_jax.records import Trajectory
from agentrm_jax.rewards.judge.common import JudgeRecord, as_list, check_replies
from agentrm_jax.rewards.judge.parsing import parse_choice
from agentrm_jax.rewards.judge.transcripts import LISTWISE_TEMPLATE, Messages, render_transcript

__all__ = ["ListwiseJudge"]


class ListwiseJudge:
    """Shows the candidates for one task together and asks which is best.

    `rank(candidates)` returns the 0-based index of the pick, or None when the
    reply cannot be parsed (counted in `failures`, raw text in `last_outputs`).
    `score(candidates)` gives 1.0 to the pick and 0.0 to the others, and 0.5
    to all when the judge's answer is unreadable. These scores are only
    comparable among the trajectories of one call: they say nothing about a
    trajectory's absolute quality. `score_steps` compares, for each step
    index i, the prefixes steps[:i+1] of the candidates that have that step.
    """

    kind = "judge"

    def __init__(self, policy, *, temperature: float = 0.0, seed: int = 0, max_steps_shown: int | None = None,
                 max_field_chars: int | None = 1000, template: str = LISTWISE_TEMPLATE):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.policy, self.temperature, self.seed = policy, float(temperature), int(seed)
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.calls = 0
        self.samples = 0
        self.failures = 0
        self.last_outputs: list[str] = []
        self.last_records: list[JudgeRecord] = []

    def messages(self, candidates: Sequence[Trajectory]) -> Messages:
        """The chat context for one group of candidates (same task)."""
        blocks = []
        for k, t in enumerate(candidates):
            # the instruction is shared: shown once, with the first candidate
            transcript = render_transcript(t, max_steps_shown=self.max_steps_shown,
                                           max_field_chars=self.max_field_chars, show_instruction=k == 0)
            blocks.append(f"=== Candidate {k + 1} ===\n{transcript}")
        prompt = self.template.replace("{count}", str(len(candidates))).replace("{candidates}", "\n\n".join(blocks))
        return [{"role": "user", "content": prompt}]

    @staticmethod
    def _check_group(candidates: list[Trajectory]) -> None:
        if not candidates:
            raise ValueError("rank needs at least one candidate")
        first = candidates[0]
        for t in candidates[1:]:
            if t.task != first.task or t.instruction != first.instruction:
                raise ValueError("listwise judging compares candidates of one task: all trajectories must share "
                                 "task and instruction")

    def rank_many(self, groups: Sequence[Sequence[Trajectory]]) -> list[int | None]:
        """`rank` for several groups with one policy call (groups of one candidate are not asked)."""
        groups = [as_list(g) for g in groups]
        for g in groups:
            self._check_group(g)
        self.last_outputs, self.last_records = [], []
        asked = [i for i, g in enumerate(groups) if len(g) > 1]
        picks: list[int | None] = [0 if len(g) == 1 else None for g in groups]
        if not asked:
            return picks
        contexts = [self.messages(groups[i]) for i in asked]
        replies = check_replies(self.policy.sample(contexts, n=1, temperature=self.temperature, seed=self.seed),
                                 len(contexts), 1)
        self.calls += 1
        for i, row in zip(asked, replies):
            choice = parse_choice(row[0], len(groups[i]))
            picks[i] = choice
            self.samples += 1
            self.failures += choice is None
            self.last_outputs.append(row[0])
            self.last_records.append(JudgeRecord(i, 0, row[0], None if choice is None else float(choice)))
        return picks

    def rank(self, candidates: Sequence[Trajectory]) -> int | None:
        """0-based index of the best candidate, or None when the reply could not be parsed."""
        return self.rank_many([candidates])[0]

    @property
    def parse_rate(self) -> float:
        """Share of replies (over the judge's lifetime) that named a valid candidate."""
        return 1.0 - self.failures / self.samples if self.samples else math.nan

    @staticmethod
    def _one_hot(count: int, pick: int | None) -> np.ndarray:
        if pick is None:
            return np.full((count,), 0.5, np.float32)
        out = np.zeros((count,), np.float32)
        out[pick] = 1.0
        return out

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """1.0 for the judge's pick, 0.0 for the others; all 0.5 when the reply is unreadable."""
        candidates = as_list(trajectories)
        if not candidates:
            return np.zeros((0,), np.float32)
        return self._one_hot(len(candidates), self.rank(candidates))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """Step i: 1/0 (0.5 on failure) among the prefixes steps[:i+1] of the candidates that reach step i."""
        candidates = as_list(trajectories)
        out = [np.zeros((len(t.steps),), np.float32) for t in candidates]
        if not candidates:
            return out
        self._check_group(candidates)
        depth = max(len(t.steps) for t in candidates)
        members = [[k for k, t in enumerate(candidates) if len(t.steps) > i] for i in range(depth)]
        picks = self.rank_many([[candidates[k].prefix(i + 1) for k in m] for i, m in enumerate(members)])
        for i, (m, pick) in enumerate(zip(members, picks)):
            for k, s in zip(m, self._one_hot(len(m), pick)):
                out[k][i] = s
        return out
