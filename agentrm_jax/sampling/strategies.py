"""Next-token selection: greedy, temperature, top-k and top-p (nucleus) sampling.

`SamplingStrategy` holds only what changes the compiled program (static under
jit); temperature and top-p travel as arrays so changing them never recompiles.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingStrategy:
    """Static part of a sampling configuration (hashable: a jit static argument)."""

    greedy: bool = True  # argmax; temperature/top-k/top-p ignored
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    use_top_p: bool = False  # apply nucleus filtering with the top_p array

    @classmethod
    def from_args(cls, temperature: float, top_p: float, top_k: int) -> "SamplingStrategy":
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
        if temperature == 0.0:
            return cls(greedy=True)
        return cls(greedy=False, top_k=int(top_k), use_top_p=top_p < 1.0)


def select_next(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array,
                strategy: SamplingStrategy) -> jax.Array:
    """Chooses one token per row. logits [R, V] float32, keys [R] (one PRNG key per row) -> ids [R] int32.

    Row r draws only from keys[r], so its token never depends on the other rows
    or on how many there are.
    """
    if strategy.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / jnp.maximum(temperature, 1e-6)
    draw = jax.vmap(lambda key, row: jax.random.categorical(key, row))
    if strategy.top_k or strategy.use_top_p:
        k = strategy.top_k or logits.shape[-1]
        values, indices = jax.lax.top_k(logits, k)  # [R, k], sorted descending
        if strategy.use_top_p:
            probs = jax.nn.softmax(values, axis=-1)
            before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each token
            values = jnp.where(before < top_p, values, -jnp.inf)  # the top token always survives
        choice = draw(keys, values)  # [R]
        return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return draw(keys, logits).astype(jnp.int32)
