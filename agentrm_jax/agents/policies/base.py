"""What every policy shares: the `PolicySampler` protocol, `PolicyStats` cost accounting, and the helpers
`turn_of` (a context's turn number), `context_key` (a context's fingerprint) and `_check_args` (the
arguments every `sample` validates)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentrm_jax.agents.prompts import count_steps, omitted_steps

__all__ = ["Messages", "PolicySampler", "PolicyStats", "context_key", "turn_of"]

Messages = list[dict[str, str]]


@runtime_checkable
class PolicySampler(Protocol):
    """Proposes next steps: n step texts (thought + action) per chat context."""

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]: ...


@dataclasses.dataclass
class PolicyStats:
    """Cost accounting of a policy (cumulative over calls)."""

    calls: int = 0  # sample() calls
    contexts: int = 0  # contexts sampled for
    samples: int = 0  # step texts returned
    prefills: int = 0  # prompt prefills (JaxPolicy: one per context, shared by its n samples)
    prompt_tokens: int = 0  # prompt tokens sent (OpenAIPolicy: as the server's usage reports)
    prefilled_tokens: int = 0  # prompt tokens the model computed (less the prefix-cache hits)
    cache_hit_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (JaxPolicy; OpenAIPolicy
    #                            where the server reports usage.prompt_tokens_details.cached_tokens)
    cache_evictions: int = 0  # prefix-cache blocks evicted (JaxPolicy)
    cache_bytes: int = 0  # bytes the prefix cache holds now (JaxPolicy)
    generated_tokens: int = 0  # tokens generated
    requests: int = 0  # HTTP requests that got an answer (OpenAIPolicy)
    attempts: int = 0  # HTTP attempts, retries included (OpenAIPolicy)


def turn_of(context: Messages) -> int:
    """The turn number of a context: how many steps of the task came before it (example turns excluded,
    steps left out by `build_messages(max_steps=...)` included)."""
    return count_steps(context) + omitted_steps(context)


def _check_args(contexts, n, temperature):
    """Raise a ValueError for arguments no `sample` accepts (a bare context, n < 1, a negative temperature)."""
    if isinstance(contexts, (str, dict)) or (len(contexts) and isinstance(contexts[0], dict)):
        raise ValueError("contexts must be a list of chat message lists; wrap a single context in a list")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def context_key(messages: Messages) -> str:
    """A fingerprint of a chat context (equal contexts, equal keys): sha256 hex of its roles and contents."""
    blob = json.dumps([[m.get("role"), m.get("content")] for m in messages], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()
