"""The per-kind reward-model loss as (sum over valid rows, count, scores): pure and shape-static, so
micro-batches and devices add up exactly.

    loss_sums(model, batch, kind=..., loss=..., beta=..., margin=..., reference=...)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from agentrm_jax.rewards.explicit import bce_with_logits, gather_positions
from agentrm_jax.rewards.implicit import implicit_token_rewards, token_logprobs, trajectory_rewards

__all__ = ["loss_sums"]


def loss_sums(model, batch: dict[str, jax.Array], *, kind: str, loss: str = "mse", beta: float = 0.05,
              margin: float = 0.0, reference: Callable | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(sum of per-row losses over valid rows, number of valid rows, per-row scores [R]) of one batch.

    batch: the arrays of `training.data` (input_ids, attention_mask, agent_mask [R, L], target_index,
    targets [R, 1], labels, weights [R]); rows with weight 0 are filler and count for nothing.
    explicit: the head output at target_index, MSE to the target or BCE-with-logits ("bce").
    implicit: r = beta * sum over agent tokens of log pi_theta - log pi_ref; BCE(sigmoid(r), label).
      `reference(input_ids, attention_mask) -> logits` gives pi_ref (gradients are stopped).
    pairwise: rows 2i / 2i+1 are chosen / rejected; -log sigmoid(s_c - s_r - margin) per pair.
    Scores are what the RM reports for each row (head output, or the implicit reward r).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weights = batch["weights"].astype(jnp.float32)
    if kind == "implicit":
        logits = model(ids, mask)
        ref_logits = jax.lax.stop_gradient(reference(ids, mask))
        token_rewards = implicit_token_rewards(token_logprobs(logits, ids), token_logprobs(ref_logits, ids),
                                               batch["agent_mask"] & mask.astype(bool), beta)
        scores = trajectory_rewards(token_rewards)
        per_row = bce_with_logits(scores, batch["labels"].astype(jnp.float32))
        valid = weights > 0
    else:
        values = model(ids, mask)
        scores = gather_positions(values.astype(jnp.float32), batch["target_index"])[:, 0]
        if kind == "explicit":
            target = batch["targets"][:, 0].astype(jnp.float32)
            per_row = jnp.square(scores - target) if loss == "mse" else bce_with_logits(scores, target)
            valid = (weights > 0) & (batch["target_index"][:, 0] >= 0)
        elif kind == "pairwise":
            diff = scores[0::2] - scores[1::2] - margin
            per_row = -jax.nn.log_sigmoid(diff)
            valid = weights[0::2] > 0
        else:
            raise ValueError(f"unknown RM kind {kind!r}")
    # where, not multiply: a NaN in a filler row must not reach the sum or its gradient
    total = jnp.sum(jnp.where(valid, per_row, 0.0))
    return total, jnp.sum(valid).astype(jnp.float32), scores
