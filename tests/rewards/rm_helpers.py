"""Shared builders for reward-model tests: random trajectories and tiny models with the bundled vocabulary."""

from __future__ import annotations

import numpy as np

from agentrm_jax.records import Step, Trajectory

WORDS = "north south east west pick up the red ball door open key box go to room table".split()


def random_trajectories(count: int, seed: int = 0, max_steps: int = 6) -> list[Trajectory]:
    """Trajectories of varied lengths (0..max_steps-1 steps, 1..40-word texts), ids "0".."count-1"."""
    rng = np.random.default_rng(seed)

    def text(lo, hi):
        return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))

    out = []
    for i in range(count):
        steps = tuple(Step(text(0, 8), "go " + text(1, 3), text(0, 25)) for _ in range(int(rng.integers(0, max_steps))))
        out.append(Trajectory("maze", "Find the goal: " + text(1, 40), steps, id=str(i)))
    return out
