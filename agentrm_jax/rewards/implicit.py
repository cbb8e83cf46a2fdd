"""Implicit process reward model (Yuan et al., arXiv 2412.01981), trained on outcome labels only.

With a policy-like model pi_theta and a frozen reference pi_ref, the reward of
agent token y_t is

    r_t = beta * (log pi_theta(y_t | y_<t) - log pi_ref(y_t | y_<t)),

counted only on the agent's tokens (assistant turns, `agent_mask`). A step's
reward is the sum of r_t over its tokens (equal to the difference of the
cumulative log-ratio at consecutive step ends, since non-agent tokens add 0),
the trajectory reward is the sum over all agent tokens, and training minimises
BCE(sigmoid(trajectory reward), outcome label).

All functions are pure and shape-static, so they compose under jit/grad:
    token_logprobs(logits [B, T, V], input_ids [B, T]) -> [B, T]
    implicit_token_rewards(logp_theta, logp_ref, agent_mask, beta) -> [B, T]
    step_rewards(token_rewards, step_starts [B, S], step_ends [B, S]) -> [B, S]
    trajectory_rewards(token_rewards) -> [B]
    outcome_loss(trajectory_rewards, labels) -> scalar
    aggregate_steps(step_rewards, valid, how) -> [B]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agentrm_jax.rewards.explicit import bce_with_logits

__all__ = ["AGGREGATIONS", "aggregate_steps", "implicit_token_rewards", "outcome_loss", "step_rewards",
           "token_logprobs", "trajectory_rewards"]

AGGREGATIONS = ("min", "sum", "last", "mean")


def token_logprobs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """log p(input_ids[:, t] | input_ids[:, <t]) as [B, T] float32; position 0 (no context) is 0."""
    logits = logits[:, :-1].astype(jnp.float32)
    targets = input_ids[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    logp = picked - jax.nn.logsumexp(logits, axis=-1)
    return jnp.pad(logp, ((0, 0), (1, 0)))


def implicit_token_rewards(logp_theta: jax.Array, logp_ref: jax.Array, agent_mask: jax.Array,
                           beta: float) -> jax.Array:
    """beta * (log pi_theta - log pi_ref) on agent tokens, 0 elsewhere; [B, T] float32."""
    ratio = (logp_theta - logp_ref).astype(jnp.float32)
    return jnp.where(agent_mask.astype(bool), beta * ratio, 0.0)


def step_rewards(token_rewards: jax.Array, step_starts: jax.Array, step_ends: jax.Array) -> jax.Array:
    """Sum of token rewards over each step's tokens [start, end]; [B, S], 0 where end is -1."""
    cumulative = jnp.cumsum(token_rewards, axis=-1)
    t = token_rewards.shape[-1]
    at_end = jnp.take_along_axis(cumulative, jnp.clip(step_ends, 0, t - 1), axis=-1)
    before = jnp.take_along_axis(cumulative, jnp.clip(step_starts - 1, 0, t - 1), axis=-1)
    before = jnp.where(step_starts > 0, before, 0.0)
    return jnp.where(step_ends >= 0, at_end - before, 0.0)


def trajectory_rewards(token_rewards: jax.Array) -> jax.Array:
    """Sum of the token rewards of each row: [B, T] -> [B]."""
    return jnp.sum(token_rewards, axis=-1)


def outcome_loss(rewards: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean BCE(sigmoid(trajectory reward), outcome label in {0, 1} or soft); scalar float32."""
    return jnp.mean(bce_with_logits(rewards.astype(jnp.float32), labels.astype(jnp.float32)))


def aggregate_steps(rewards: jax.Array, valid: jax.Array, how: str = "min") -> jax.Array:
    """Combine step rewards [B, S] over the valid steps into one score per row [B].

    min / sum / mean over valid steps, or the last valid step's reward; rows
    with no valid step score 0.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    valid = valid.astype(bool)
    count = jnp.sum(valid, axis=-1)
    if how == "min":
        out = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=-1)
    elif how == "sum":
        out = jnp.sum(jnp.where(valid, rewards, 0.0), axis=-1)
    elif how == "mean":
        out = jnp.sum(jnp.where(valid, rewards, 0.0), axis=-1) / jnp.maximum(count, 1)
    else:
        s = rewards.shape[-1]
        last = jnp.max(jnp.where(valid, jnp.arange(s), -1), axis=-1)
        out = jnp.take_along_axis(rewards, jnp.clip(last, 0, s - 1)[:, None], axis=-1)[:, 0]
    return jnp.where(count > 0, out, 0.0)
