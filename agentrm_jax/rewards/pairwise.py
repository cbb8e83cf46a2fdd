"""Bradley–Terry pairwise loss, for users whose data are preference pairs (beyond the paper).

    bradley_terry_loss(chosen [B], rejected [B], margin=0) = mean(-log sigmoid(chosen - rejected - margin))

`margin` (scalar or [B]) asks the chosen score to exceed the rejected one by
at least that much before the loss flattens (as in Llama 2's RM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bradley_terry_loss", "pairwise_accuracy"]


def bradley_terry_loss(chosen: jax.Array, rejected: jax.Array, margin: float | jax.Array = 0.0) -> jax.Array:
    """Mean negative log-likelihood that `chosen` beats `rejected`; float32 scalar."""
    diff = chosen.astype(jnp.float32) - rejected.astype(jnp.float32) - margin
    return jnp.mean(-jax.nn.log_sigmoid(diff))


def pairwise_accuracy(chosen: jax.Array, rejected: jax.Array) -> jax.Array:
    """Fraction of pairs where the chosen score is strictly higher."""
    return jnp.mean((chosen > rejected).astype(jnp.float32))
