"""Explicit reward model (AgentRM's best): a value head regressed on MCTS values of states.

A state is a (prefix) trajectory; its value is read at its last token, after
its last observation. Training reads its targets there (`training.data`) and
so does scoring (`rewards.scoring.ExplicitRM`): a trajectory's score at its
last token, step i's score at `prefix_ends[i]`, the last token of the first
i + 1 steps' rendering, so a step's score is the score of that prefix.

Pure functions over the per-token values of a `ValueModel`:

- `gather_positions(values [B, T], index [B, S]) -> [B, S]`: the values at
  given token positions (index -1 = no position; gives 0 there).
- `value_targets_loss(values, index, targets, loss=...)`: the mean loss over the
  valid (index >= 0) positions, MSE of the raw head output to targets in [0, 1],
  or BCE-with-logits with the head output as a logit. Padding and missing
  positions never contribute, to the loss or to its gradient.

What a score means: `score_transform(loss)` maps the head output to a score,
identity for MSE, sigmoid for BCE (so a BCE-trained RM scores in (0, 1) too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LOSSES", "bce_with_logits", "gather_positions", "last_token_index", "score_transform",
           "value_targets_loss"]

LOSSES = ("mse", "bce")


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """[B, T] mask -> [B] index of each row's last real token (left or right padding)."""
    t = attention_mask.shape[-1]
    positions = jnp.arange(t)
    return jnp.max(jnp.where(attention_mask.astype(bool), positions, -1), axis=-1)


def gather_positions(values: jax.Array, index: jax.Array) -> jax.Array:
    """values [B, T], index [B, S] (int, -1 = none) -> [B, S] values at those positions, 0 where none."""
    safe = jnp.clip(index, 0, values.shape[-1] - 1)
    picked = jnp.take_along_axis(values, safe, axis=-1)
    return jnp.where(index >= 0, picked, 0.0)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy of sigmoid(logits) to soft targets in [0, 1], numerically stable."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def value_targets_loss(values: jax.Array, index: jax.Array, targets: jax.Array, *, loss: str = "mse"
                       ) -> jax.Array:
    """Mean loss of the head output at `index` [B, S] to `targets` [B, S] over positions with index >= 0.

    loss: "mse" (head output is the value) or "bce" (head output is a logit).
    Returns a float32 scalar; 0 when no position is valid.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    valid = index >= 0
    pred = gather_positions(values.astype(jnp.float32), index)
    targets = targets.astype(jnp.float32)
    per = jnp.square(pred - targets) if loss == "mse" else bce_with_logits(pred, targets)
    per = jnp.where(valid, per, 0.0)  # where, not multiply: a NaN target at padding must not leak
    return jnp.sum(per) / jnp.maximum(jnp.sum(valid), 1)


def score_transform(loss: str):
    """Head output -> score: identity for an MSE-trained head, sigmoid for a BCE-trained one."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return (lambda x: x) if loss == "mse" else jax.nn.sigmoid
