"""Shared checks for search tests: what a policy was really asked, and how many prefills a search needs."""

from __future__ import annotations

from agentrm_jax.agents.policies import context_key


class CountingPolicy:
    """Wraps a policy and records what it was asked: a context sent is one prefill for a sampler that shares
    a context's prefill among its n samples (as JaxPolicy does)."""

    def __init__(self, policy):
        self.policy = policy
        self.calls: list[tuple[int, int]] = []  # (contexts, n) of each sample() call
        self.returned = 0  # step texts handed back

    @property
    def stats(self):
        return getattr(self.policy, "stats", None)

    @property
    def prefills(self) -> int:
        return sum(c for c, _ in self.calls)

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        assert len({context_key(c) for c in contexts}) == len(contexts), "a call repeated a context"
        rows = self.policy.sample(contexts, n=n, temperature=temperature, seed=seed)
        self.calls.append((len(contexts), n))
        self.returned += sum(len(r) for r in rows)
        return rows


def lockstep_contexts(trajectories) -> tuple[int, int]:
    """(distinct contexts, samples) that episodes played in lockstep needed: at turn t every episode that
    took a step t needs a sample, and episodes with the same first t steps share one context."""
    contexts = samples = 0
    for t in range(max((len(x.steps) for x in trajectories), default=0)):
        live = [x for x in trajectories if len(x.steps) > t]
        contexts += len({(x.instruction, x.steps[:t]) for x in live})
        samples += len(live)
    return contexts, samples


def beam_contexts(tree) -> int:
    """Contexts a beam search needed: one per live beam and turn, i.e. the distinct parents of each turn's nodes."""
    return len({(n.turn, n.parent) for n in tree})
