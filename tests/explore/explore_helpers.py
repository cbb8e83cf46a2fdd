"""A toy env with known state values and a scripted stochastic policy, for the MCTS tests.

CoinEnv (2 turns): "pull a" or "pull b", then "heads" or "tails"; success iff (a, heads) or (b, tails).
CoinPolicy: turn 0 picks an arm uniformly, turn 1 says heads with probability P_HEADS, so under it
V(after pull a) = P_HEADS and V(after pull b) = 1 - P_HEADS.
"""

from __future__ import annotations

import random

from agentrm_jax.agents.policies import context_key, turn_of
from agentrm_jax.envs.base import ReplayEnv
from agentrm_jax.records import format_step

P_HEADS = 0.7


class CoinEnv(ReplayEnv):
    name = "coin"

    def __init__(self, *, split: str = "train", max_turns: int = 2):
        super().__init__(split=split, max_turns=max_turns)
        self.arm = self.coin = None

    def _reset(self, seed):
        self.arm = self.coin = None
        self._instruction = f"Task {seed}: pull arm a or b, then flip a coin."
        return self._instruction

    def _step(self, action):
        if self.arm is None and action in ("pull a", "pull b"):
            self.arm = action[-1]
            return f"You pulled {self.arm}. Now flip.", False
        if self.arm is not None and action in ("heads", "tails"):
            self.coin = action
            return f"The coin says {action}.", True
        return "Nothing happens.", False

    def _success(self):
        return (self.arm, self.coin) in (("a", "heads"), ("b", "tails"))

    def _progress(self):
        return 1.0 if self._success() else (0.5 if self.arm else 0.0)

    def expert_actions(self):
        return ["pull a", "heads"]


class CoinPolicy:
    """Deterministic given (call seed, context, sample index); records each call's contexts."""

    def __init__(self, p_heads: float = P_HEADS):
        self.p_heads = p_heads
        self.calls: list[list] = []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.calls.append(list(contexts))
        rows = []
        for c in contexts:
            row = []
            for j in range(n):
                rng = random.Random(f"{seed}/{context_key(c)}/{j}")
                if turn_of(c) == 0:
                    action = rng.choice(["pull a", "pull b"])
                else:
                    action = "heads" if rng.random() < self.p_heads else "tails"
                row.append(format_step("", action))
            rows.append(row)
        return rows


class MumblePolicy:
    """Never names an action."""

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        return [["I am not sure what to do here, let me think about it for a long while."] * n for _ in contexts]
