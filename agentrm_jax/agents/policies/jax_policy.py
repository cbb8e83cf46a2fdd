"""`JaxPolicy`: our in-process JAX model as a policy, through `Sampler` (the n samples of a context share
one prefill). Decoding stops as soon as a complete action line has been generated (checked between decode
chunks together with the stop strings "\\nObservation" / "\\nThought"), and the text is cut right after
the first action line. A prefix KV cache (off by default; `prefix_cache=True` turns it on, and users
`kv_cache_mb` / `--kv-cache-mb N` through `agents.factory.make_policy`) keeps the KV of
earlier contexts and completions, so a turn prefills only what its context added (see `sampling.prefix_cache`),
and the contexts of one call prefill their common prefix once (`sampling.sampler`). On 8 lockstep maze episodes
it prefilled 0.9x the distinct context tokens and played 2.1x faster than without it (docs/BENCHMARKS.md)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from agentrm_jax.agents.policies.base import Messages, PolicyStats, _check_args
from agentrm_jax.agents.prompts import STOP_STRINGS, action_line_complete, cut_after_action, shortened_contexts

__all__ = ["JaxPolicy"]


def _action_sampler(model, tokenizer, max_batch, prefix_cache, kv_cache_mb):
    """A `Sampler` that also stops a row once its action line is complete (so decoding ends right after it)."""
    from agentrm_jax.sampling.sampler import Sampler

    return Sampler(model, tokenizer, max_batch=max_batch, stop_when=action_line_complete,
                   prefix_cache=prefix_cache, kv_cache_mb=kv_cache_mb)


class JaxPolicy:
    """Our JAX model as a policy (greedy at temperature 0).

    Contexts too long for the model lose their oldest steps, then the worked
    example, until the prompt fits (`prompts.shortened_contexts`). Steps go in
    blocks of about `drop_tokens` tokens (default a quarter of the model's
    positions) at boundaries that stay put as the episode grows, so the next
    turns extend the cut context and hit the prefix cache, instead of a new
    cut, and a full prefill, every turn. Samples use
    the model's weights as they are at each `sample` call (updates made after
    construction, adapters added in place included), and a context's samples
    depend only on (seed, context, sample index), not on the other contexts of
    the call; a context repeated in one call gets fresh samples (see
    `sampling.sampler`). `stats.generated_tokens` counts the tokens of each
    completion up to the newline that ends its action line (or its stop string).

    max_batch: rows per prefill / decode call at most (8: on agent contexts of ~1,000+ distinct tokens, 32
    rows were slower and held 2.3x the memory, though a synthetic short-context sweep gave 32 rows 2.2x the
    tokens/s; docs/BENCHMARKS.md); a call's rows are bucketed, not padded to it.
    prefix_cache / kv_cache_mb: the sampler's prefix KV cache (off by default: see docs/ARCHITECTURE.md) and its byte budget;
    `stats` reports the tokens prefilled and served from it.
    drop_tokens: the block, in tokens, in which an overlong context's oldest steps are dropped (None: a quarter
    of max_position_embeddings; 1: one step at a time, the least history lost and a full prefill every turn).
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 96, max_batch: int = 8, top_p: float = 1.0,
                 top_k: int = 0, stop: Sequence[str] = STOP_STRINGS, prefix_cache: bool = False,
                 kv_cache_mb: float = 512.0, drop_tokens: int | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if drop_tokens is not None and drop_tokens < 1:
            raise ValueError(f"drop_tokens must be >= 1 token or None, got {drop_tokens}")
        self.sampler = _action_sampler(model, tokenizer, max_batch, prefix_cache, kv_cache_mb)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.top_p, self.top_k = top_p, top_k
        self.stop = tuple(stop)
        self.max_positions = int(model.config.max_position_embeddings)
        self.drop_tokens = drop_tokens if drop_tokens is not None else max(1, self.max_positions // 4)
        self._stats = PolicyStats()

    @classmethod
    def from_pretrained(cls, path=None, *, dtype: str = "float32", **kwargs) -> JaxPolicy:
        """Load a model (default: the bundled SmolLM2-135M-Instruct GGUF) and wrap it."""
        from agentrm_jax.models import bundled_model_path, from_pretrained

        model, tokenizer = from_pretrained(path or bundled_model_path(), dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    @property
    def stats(self) -> PolicyStats:
        s = self.sampler.stats
        return dataclasses.replace(self._stats, prefills=s.prefill_rows, generated_tokens=s.generated_tokens,
                                   prefilled_tokens=s.prefilled_tokens, cache_hit_tokens=s.cache_hit_tokens,
                                   cache_evictions=s.cache_evictions, cache_bytes=s.cache_bytes)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, context: Messages) -> list[int]:
        budget = self.max_positions - self.max_new_tokens
        messages = list(context)
        ids = self.sampler.encode(messages)
        if len(ids) <= budget:
            return ids
        # the oldest steps in blocks of about drop_tokens (stable from turn to turn), then the worked example
        for shorter in shortened_contexts(messages, self._count_tokens, self.drop_tokens):
            ids = self.sampler.encode(shorter)
            if len(ids) <= budget:
                return ids
        raise ValueError(f"the task prompt alone has {len(ids)} tokens; the model allows "
                         f"{self.max_positions} positions with max_new_tokens={self.max_new_tokens}")

    def sample(self, contexts: Sequence[Messages], n: int = 1, temperature: float = 0.0,
               seed: int = 0) -> list[list[str]]:
        _check_args(contexts, n, temperature)
        if not contexts:
            return []
        ids = [self._encode(c) for c in contexts]
        rows = self.sampler.generate_ids(ids, max_new_tokens=self.max_new_tokens, temperature=temperature,
                                         top_p=self.top_p, top_k=self.top_k, n=n, stop=self.stop,
                                         seed=int(seed) % (2**31))
        self._stats.calls += 1
        self._stats.contexts += len(contexts)
        self._stats.samples += len(contexts) * n
        self._stats.prompt_tokens += sum(len(i) for i in ids)
        return [[cut_after_action(c.text) for c in row] for row in rows]
