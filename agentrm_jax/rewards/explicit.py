"""Explicit reward model (AgentRM's best): a value head regressed on MCTS values of states.

A state is a (prefix) trajectory; its value is read at its last token, after
its last observation. Training reads its targets there (`training.data`) and
so does scoring (`rewards.scoring.ExplicitRM`): a trajectory's score at its
last token, step i's score at `prefix_ends[i]`, the last token of the first
i + 1 steps' rendering, so a step's score is the score of that prefix.

Pure functions over the per-token values of a `ValueModel` (all jit/vmap/grad-safe;
`loss` is a static Python string):

- `gather_positions(values [B, T], index [B, S]) -> [B, S]`: the values at
  given token positions (index -1 = no position; gives 0 there).
- `explicit_scores(values [B, T], index [B, S], loss=...) -> [B, S]`: the RM's
  scores there (`score_transform` of the head output), 0 where index is -1.
- `value_losses(pred, targets, loss=...)`: the elementwise loss, MSE of the raw
  head output to targets in [0, 1], or BCE-with-logits with the head output as a logit.
- `masked_sum(per, valid) -> (total, count)` / `masked_mean`: the reduction every
  RM loss uses (here, in `implicit`, `pairwise` and the trainer): invalid entries
  never contribute, to the loss or to its gradient, even when they hold NaN.
- `value_targets_loss(values, index, targets, loss=..., valid=None)`: the mean
  loss over the valid (index >= 0, and `valid`) positions.

What a score means: `score_transform(loss)` maps the head output to a score,
identity for MSE, sigmoid for BCE (so a BCE-trained RM scores in (0, 1) too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LOSSES", "bce_with_logits", "explicit_scores", "gather_positions", "last_token_index", "masked_mean",
           "masked_sum", "score_transform", "value_losses", "value_targets_loss"]

LOSSES = ("mse", "bce")


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """[B, T] mask -> [B] index of each row's last real token (left or right padding); -1 for an empty row."""
    t = attention_mask.shape[-1]
    positions = jnp.arange(t)
    return jnp.max(jnp.where(attention_mask.astype(bool), positions, -1), axis=-1)


def gather_positions(values: jax.Array, index: jax.Array) -> jax.Array:
    """values [B, T], index [B, S] (int, -1 = none) -> [B, S] values at those positions, 0 where none."""
    safe = jnp.clip(index, 0, values.shape[-1] - 1)
    picked = jnp.take_along_axis(values, safe, axis=-1)
    return jnp.where(index >= 0, picked, 0.0)


def score_transform(loss: str):
    """Head output -> score: identity for an MSE-trained head, sigmoid for a BCE-trained one."""
    _check_loss(loss)
    return (lambda x: x) if loss == "mse" else jax.nn.sigmoid


def explicit_scores(values: jax.Array, index: jax.Array, *, loss: str = "mse") -> jax.Array:
    """The explicit RM's scores at token positions: values [B, T] (head output), index [B, S] -> [B, S] float32.

    index: int, the token whose value is read (a trajectory's last token, `prefix_ends` for steps);
    -1 = none, scored 0. loss: what the head was trained with ("mse": the score is the output,
    "bce": sigmoid of it). Static under jit.
    """
    transform = score_transform(loss)
    picked = gather_positions(values.astype(jnp.float32), index)  # [B, S]
    return jnp.where(index >= 0, transform(picked), 0.0)


def bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy of sigmoid(logits) to soft targets in [0, 1], numerically stable."""
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def value_losses(pred: jax.Array, targets: jax.Array, *, loss: str = "mse") -> jax.Array:
    """Elementwise loss of head outputs `pred` to `targets` in [0, 1] (same shape, float32).

    loss: "mse", (pred - target)^2 (the head output is the value), or "bce",
    BCE-with-logits (the head output is a logit). Static under jit.
    """
    _check_loss(loss)
    pred, targets = pred.astype(jnp.float32), targets.astype(jnp.float32)
    return jnp.square(pred - targets) if loss == "mse" else bce_with_logits(pred, targets)


def masked_sum(per: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of `per` over entries where `valid`, number of valid entries), float32 scalars.

    Sums rather than means so micro-batches and devices add up exactly (the trainer divides once).
    A NaN in `per` at an invalid entry reaches neither the sum nor the gradient; a NaN *input* of
    an invalid entry's formula (a label, a score) must be zeroed before it (`where`), as the mean
    losses here do, or its 0 * NaN would reach the gradient.
    """
    # where, not multiply: a NaN at an invalid entry (padding, filler) must not reach the sum or its gradient
    total = jnp.sum(jnp.where(valid, per, 0.0))
    return total, jnp.sum(valid).astype(jnp.float32)


def masked_mean(per: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of `per` over the valid entries; 0 when none is valid (float32 scalar, finite gradient)."""
    total, count = masked_sum(per, valid)
    return total / jnp.maximum(count, 1.0)


def value_targets_loss(values: jax.Array, index: jax.Array, targets: jax.Array, *, loss: str = "mse",
                       valid: jax.Array | None = None) -> jax.Array:
    """Mean loss of the head output at `index` [B, S] to `targets` [B, S] over positions with index >= 0.

    values: [B, T] head output. valid: optional bool [B, S] (or broadcastable, e.g. [B, 1] row
    weights > 0) further restricting the positions. loss: "mse" or "bce" (see `value_losses`).
    Returns a float32 scalar; 0 when no position is valid.
    """
    ok = index >= 0
    if valid is not None:
        ok = ok & valid.astype(bool)
    targets = jnp.where(ok, targets, 0.0)  # a NaN target at padding must not reach the gradient either
    return masked_mean(value_losses(gather_positions(values.astype(jnp.float32), index), targets, loss=loss), ok)
