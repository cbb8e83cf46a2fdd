"""Scorers for ablations: the environment's own verdict (an upper bound) and chance (a lower bound).

Both follow the `RewardModel` interface (`score`, `score_steps`,
`score_with_steps`), so search code cannot tell them from a learned RM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from agentrm_jax.records import PROGRESS_TRACE, Trajectory

__all__ = ["OracleScorer", "RandomScorer"]


class OracleScorer:
    """Scores a (partial) trajectory by what the environment says of it: `progress + success`.

    Success dominates (a success scores in [1, 2], anything else in [0, 1]).
    It needs trajectories whose `progress` was set by the env, as every search
    and `run_episode` do; per-step scores come from `meta["progress_trace"]`.
    """

    kind = "oracle"

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        out = np.zeros((len(trajectories),), np.float32)
        for i, t in enumerate(trajectories):
            if t.progress is None:
                raise ValueError(f"oracle scorer: trajectory {t.id or i} has no progress; score trajectories "
                                 "played by a search or run_episode (they carry the env's progress)")
            out[i] = float(t.progress) + (1.0 if t.success else 0.0)
        return out

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        out = []
        for t, final in zip(trajectories, self.score(trajectories)):
            trace = list(t.meta.get(PROGRESS_TRACE, []))[:len(t.steps)]
            steps = np.full((len(t.steps),), np.nan, np.float32)
            steps[:len(trace)] = np.asarray(trace, np.float32)
            if len(t.steps):
                steps[-1] = final
            out.append(steps)
        return out

    def score_with_steps(self, trajectories: Sequence[Trajectory]) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.score(trajectories), self.score_steps(trajectories)


def _uniform(seed: int, trajectory: Trajectory, num_steps: int) -> float:
    """A uniform [0, 1) number fixed by (seed, task instruction, the first num_steps actions)."""
    blob = json.dumps([seed, trajectory.instruction, [s.action for s in trajectory.steps[:num_steps]]])
    digest = hashlib.sha256(blob.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


class RandomScorer:
    """Chance: a score drawn uniformly from [0, 1), fixed by (seed, instruction, actions so far).

    The same partial trajectory always gets the same score, so reruns are
    identical and a step's score does not depend on what it is compared with.
    """

    kind = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        return np.asarray([_uniform(self.seed, t, len(t.steps)) for t in trajectories], np.float32)

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        return [np.asarray([_uniform(self.seed, t, k + 1) for k in range(len(t.steps))], np.float32)
                for t in trajectories]

    def score_with_steps(self, trajectories: Sequence[Trajectory]) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.score(trajectories), self.score_steps(trajectories)
