"""Bradley–Terry pairwise loss, for users whose data are preference pairs (beyond the paper).

    bradley_terry_losses(chosen [P], rejected [P], margin=0) = -log sigmoid(chosen - rejected - margin)  [P]
    bradley_terry_loss(chosen, rejected, margin=0, valid=None) = its mean over the valid pairs

`margin` (scalar or [P]) asks the chosen score to exceed the rejected one by
at least that much before the loss flattens (as in Llama 2's RM). Scores are
the RM's raw outputs (for a value head, the head output at the scoring token).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agentrm_jax.rewards.explicit import masked_mean

__all__ = ["bradley_terry_loss", "bradley_terry_losses", "pairwise_accuracy"]


def bradley_terry_losses(chosen: jax.Array, rejected: jax.Array, margin: float | jax.Array = 0.0) -> jax.Array:
    """Per-pair negative log-likelihood that `chosen` beats `rejected` by `margin`: [P], [P] -> [P] float32."""
    diff = chosen.astype(jnp.float32) - rejected.astype(jnp.float32) - margin
    return -jax.nn.log_sigmoid(diff)


def bradley_terry_loss(chosen: jax.Array, rejected: jax.Array, margin: float | jax.Array = 0.0,
                       valid: jax.Array | None = None) -> jax.Array:
    """Mean `bradley_terry_losses` over the pairs where `valid` (bool [P]; None = all); float32 scalar."""
    valid = jnp.ones(jnp.shape(chosen), bool) if valid is None else valid.astype(bool)
    # zero the inputs of invalid pairs too, so a NaN there cannot meet a zero cotangent in the gradient
    chosen, rejected, margin = (jnp.where(valid, x, 0.0) for x in (chosen, rejected, margin))
    return masked_mean(bradley_terry_losses(chosen, rejected, margin), valid)


def pairwise_accuracy(chosen: jax.Array, rejected: jax.Array) -> jax.Array:
    """Fraction of pairs where the chosen score is strictly higher."""
    return jnp.mean((chosen > rejected).astype(jnp.float32))
