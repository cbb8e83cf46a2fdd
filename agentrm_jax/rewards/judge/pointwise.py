"""The pointwise judge: any `PolicySampler` rates each trajectory's progress 0-10; reward = rating / 10.

The policy may be an in-process JAX model, an OpenAI-compatible server or a
scripted fake. The reply is parsed with `parse_score` (mean over the parsed
samples when n > 1). An unparseable reply is never fatal: its score is NaN,
`failures` counts it and the raw text stays in `last_outputs` / `last_records`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agentrm_jax.records import Trajectory
from agentrm_jax.rewards.judge.common import JudgeRecord, all_prefixes, as_list, check_replies, split_by_counts
from agentrm_jax.rewards.judge.parsing import parse_score
from agentrm_jax.rewards.judge.transcripts import POINTWISE_TEMPLATE, Messages, render_transcript

__all__ = ["PointwiseJudge"]


class PointwiseJudge:
    """Asks a judge model for a 0-10 progress rating of each trajectory; reward = rating / 10.

    policy: any object with `sample(contexts, n, temperature, seed) -> list[list[str]]`.
    n: replies per trajectory; the score is the mean of the parsed ones (NaN
      when none parses). With temperature 0 the n replies are usually identical.
    max_steps_shown: show only the most recent steps (None = all).
    max_field_chars: clip each thought/action/observation to this many characters.

    After each call, `last_outputs[i]` holds the raw replies for item i and
    `last_records` one `JudgeRecord` per reply; `samples` and `failures`
    count replies and parse failures over the judge's lifetime.
    """

    kind = "judge"

    def __init__(self, policy, *, temperature: float = 0.0, n: int = 1, seed: int = 0,
                 max_steps_shown: int | None = None, max_field_chars: int | None = 2000,
                 template: str = POINTWISE_TEMPLATE):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if "{transcript}" not in template:
            raise ValueError("template must contain '{transcript}'")
        self.policy, self.temperature, self.n, self.seed = policy, float(temperature), int(n), int(seed)
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.calls = 0
        self.samples = 0
        self.failures = 0
        self.last_outputs: list[list[str]] = []
        self.last_records: list[JudgeRecord] = []

    def messages(self, trajectory: Trajectory) -> Messages:
        """The chat context the judge gets for one trajectory."""
        transcript = render_transcript(trajectory, max_steps_shown=self.max_steps_shown,
                                       max_field_chars=self.max_field_chars)
        return [{"role": "user", "content": self.template.replace("{transcript}", transcript)}]

    def _judge(self, trajectories: list[Trajectory]) -> np.ndarray:
        self.last_outputs, self.last_records = [], []
        if not trajectories:
            return np.zeros((0,), np.float32)
        contexts = [self.messages(t) for t in trajectories]
        replies = check_replies(self.policy.sample(contexts, n=self.n, temperature=self.temperature,
                                                    seed=self.seed), len(contexts), self.n)
        self.calls += 1
        scores = np.full((len(trajectories),), np.nan, np.float32)
        for i, row in enumerate(replies):
            values = [parse_score(text) for text in row]
            self.last_records.extend(JudgeRecord(i, j, text, v) for j, (text, v) in enumerate(zip(row, values)))
            parsed = [v for v in values if v is not None]
            self.samples += len(values)
            self.failures += len(values) - len(parsed)
            if parsed:
                scores[i] = np.float32(np.mean(parsed) / 10.0)
        self.last_outputs = replies
        return scores

    @property
    def parse_rate(self) -> float:
        """Share of replies (over the judge's lifetime) that held a readable rating."""
        return 1.0 - self.failures / self.samples if self.samples else math.nan

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """rating / 10 in [0, 1] per trajectory; NaN where no reply could be parsed."""
        return self._judge(as_list(trajectories))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """The score of each prefix steps[:i+1] (all prefixes of all trajectories in one policy call)."""
        flat, counts = all_prefixes(as_list(trajectories))
        return split_by_counts(self._judge(flat), counts)
