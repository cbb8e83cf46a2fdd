"""The per-kind loss (reward models, and policy SFT) as (sum over valid rows, count, scores): pure and
shape-static, so micro-batches and devices add up exactly.

    loss_sums(model, batch, kind=..., loss=..., beta=..., margin=..., reference=...)
    valid_rows(batch, kind) -> the rows (pairs for pairwise) that count

Every formula is the public one of `agentrm_jax.rewards` (`value_losses`, `outcome_losses`,
`bradley_terry_losses`, `token_log_ratios`, reduced by `masked_sum`): the trainer optimises exactly
what the reward models compute. "sft" is policy fine-tuning: `sft_token_losses`, the masked next-token
cross-entropy of a causal LM on its assistant tokens, one mean per row.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from agentrm_jax.rewards.explicit import gather_positions, masked_sum, value_losses
from agentrm_jax.rewards.implicit import outcome_losses, token_log_ratios, trajectory_rewards
from agentrm_jax.rewards.pairwise import bradley_terry_losses

__all__ = ["loss_sums", "sft_row_losses", "sft_token_losses", "valid_rows"]

KINDS = ("explicit", "implicit", "pairwise", "sft")


def sft_token_losses(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """float32 [R, T]: -log p(input_ids[:, t] | tokens < t) where loss_mask[:, t], else 0.

    logits [R, T, V] (position t predicts token t + 1); input_ids int [R, T]; loss_mask bool [R, T]
    marks the target tokens (position 0 never is one: nothing predicts it). Softmax in float32.
    """
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)  # [R, T-1, V]
    picked = jnp.take_along_axis(logp, input_ids[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]  # [R, T-1]
    losses = jnp.where(loss_mask[:, 1:], -picked, 0.0)
    return jnp.pad(losses, ((0, 0), (1, 0)))


def sft_row_losses(logits: jax.Array, input_ids: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """float32 [R]: each row's mean target-token cross-entropy (0 for a row without targets).

    One mean per row, so every demonstration weighs the same in a batch however long it is (and the
    trainer's sum-over-rows / row-count arithmetic is the RM kinds' own).
    """
    count = jnp.sum(loss_mask[:, 1:], axis=-1)
    return jnp.sum(sft_token_losses(logits, input_ids, loss_mask), axis=-1) / jnp.maximum(count, 1)


def valid_rows(batch: dict[str, jax.Array], kind: str) -> jax.Array:
    """bool [R] (pairwise: [R / 2], one per pair) of the rows whose loss counts: weight > 0, and for
    explicit a target (target_index >= 0)."""
    if kind not in KINDS:
        raise ValueError(f"unknown RM kind {kind!r}")
    weights = batch["weights"]
    if kind == "pairwise":
        weights = weights[0::2]
    valid = weights > 0
    if kind == "explicit":
        valid = valid & (batch["target_index"][:, 0] >= 0)
    return valid


def loss_sums(model, batch: dict[str, jax.Array], *, kind: str, loss: str = "mse", beta: float = 0.05,
              margin: float = 0.0, reference: Callable | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(sum of per-row losses over valid rows, number of valid rows, per-row scores [R]) of one batch.

    batch: the arrays of `training.data` (input_ids, attention_mask, agent_mask [R, L], target_index,
    targets [R, 1], labels, weights [R]); rows with weight 0 are filler and count for nothing.
    explicit: the head output at target_index, MSE to the target or BCE-with-logits ("bce").
    implicit: r = beta * sum over agent tokens of log pi_theta - log pi_ref; BCE(sigmoid(r), label).
      `reference(input_ids, attention_mask) -> logits` gives pi_ref (gradients are stopped).
    pairwise: rows 2i / 2i+1 are chosen / rejected; -log sigmoid(s_c - s_r - margin) per pair.
    sft: `sft_row_losses` of the causal LM's logits on agent_mask (the assistant replies).
    Scores are what the RM reports for each row (head output, or the implicit reward r; sft: the row's loss).
    """
    valid = valid_rows(batch, kind)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if kind == "sft":  # the causal LM's masked next-token cross-entropy; agent_mask marks the targets
        per_row = sft_row_losses(model(ids, mask), ids, batch["agent_mask"] & mask.astype(bool))
        scores = per_row
    elif kind == "implicit":
        ref_logits = jax.lax.stop_gradient(reference(ids, mask))
        token_rewards = token_log_ratios(model(ids, mask), ref_logits, ids,
                                         batch["agent_mask"] & mask.astype(bool), beta)
        scores = trajectory_rewards(token_rewards)
        per_row = outcome_losses(scores, batch["labels"])
    else:
        values = model(ids, mask)
        scores = gather_positions(values.astype(jnp.float32), batch["target_index"])[:, 0]
        if kind == "explicit":
            per_row = value_losses(scores, batch["targets"][:, 0], loss=loss)
        else:
            per_row = bradley_terry_losses(scores[0::2], scores[1::2], margin)
    total, count = masked_sum(per_row, valid)
    return total, count, scores
