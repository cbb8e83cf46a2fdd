"""`SamplerPolicy`: a minimal `PolicySampler` over an in-process `Sampler` (free-form replies, no step
cutting), for judges and tests."""

from __future__ import annotations

from collections.abc import Sequence

from agentrm_jax.agents.policies.base import Messages

__all__ = ["SamplerPolicy"]


class SamplerPolicy:
    """A minimal `PolicySampler` over an in-process model: plain `Sampler.generate`, no step cutting.

    For judges (which need free-form replies, not agent steps) and tests.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, *, max_batch: int = 8):
        from agentrm_jax.sampling.sampler import Sampler

        self.sampler = Sampler(model, tokenizer, max_batch=max_batch)
        self.max_new_tokens = int(max_new_tokens)

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        if not contexts:
            return []
        out = self.sampler.generate(list(contexts), max_new_tokens=self.max_new_tokens, temperature=temperature,
                                    n=n, seed=seed)
        return [[c.text for c in row] for row in out]
