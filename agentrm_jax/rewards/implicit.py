"""Implicit process reward model (Yuan et al., arXiv 2412.01981), trained on outcome labels only.

With a policy-like model pi_theta and a frozen reference pi_ref, the reward of
agent token y_t is

    r_t = beta * (log pi_theta(y_t | y_<t) - log pi_ref(y_t | y_<t)),

counted only on the agent's tokens (assistant turns, `agent_mask`). A step's
reward is the sum of r_t over its tokens (equal to the difference of the
cumulative log-ratio at consecutive step ends, since non-agent tokens add 0),
the trajectory reward is the sum over all agent tokens, and training minimises
BCE(sigmoid(trajectory reward), outcome label).

All functions are pure and shape-static, so they compose under jit, vmap (over a
leading axis added to every argument) and grad; `how` is a static Python string:
    token_logprobs(logits [B, T, V], input_ids [B, T]) -> [B, T]
    implicit_token_rewards(logp_theta, logp_ref, agent_mask, beta) -> [B, T]
    token_log_ratios(logits, ref_logits, input_ids, agent_mask, beta) -> [B, T]   (the two above)
    step_rewards(token_rewards, step_starts [B, S], step_ends [B, S]) -> [B, S]
    trajectory_rewards(token_rewards) -> [B]
    aggregate_steps(step_rewards, valid, how) -> [B]
    implicit_scores(token_rewards, step_starts, step_ends, how) -> ([B], [B, S])  (what ImplicitPRM reports)
    outcome_losses(trajectory_rewards, labels) -> [B];  outcome_loss(..., valid=None) -> scalar
Units: log-probabilities in nats, rewards in beta-scaled nats (float32 whatever the logits' dtype).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agentrm_jax.rewards.explicit import bce_with_logits, masked_mean

__all__ = ["AGGREGATIONS", "aggregate_steps", "implicit_scores", "implicit_token_rewards", "outcome_loss",
           "outcome_losses", "step_rewards", "token_log_ratios", "token_logprobs", "trajectory_rewards"]

AGGREGATIONS = ("min", "sum", "last", "mean")
# Finite stand-in for +inf in a masked min, so no inf can meet a zero cotangent in the backward pass.
_BIG = float(jnp.finfo(jnp.float32).max)


def token_logprobs(logits: jax.Array, input_ids: jax.Array) -> jax.Array:
    """log p(input_ids[:, t] | input_ids[:, <t]) as [B, T] float32; position 0 (no context) is 0."""
    logits = logits[:, :-1].astype(jnp.float32)
    targets = input_ids[:, 1:]
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    logp = picked - jax.nn.logsumexp(logits, axis=-1)
    return jnp.pad(logp, ((0, 0), (1, 0)))


def implicit_token_rewards(logp_theta: jax.Array, logp_ref: jax.Array, agent_mask: jax.Array,
                           beta: float) -> jax.Array:
    """beta * (log pi_theta - log pi_ref) on agent tokens, 0 elsewhere; [B, T] float32.

    logp_theta, logp_ref: [B, T] (`token_logprobs`); agent_mask: bool [B, T], which must be False on
    padding (it is never derived from pad ids); beta: a float or scalar array (traced is fine).
    """
    ratio = (logp_theta - logp_ref).astype(jnp.float32)
    return jnp.where(agent_mask.astype(bool), beta * ratio, 0.0)


def token_log_ratios(logits: jax.Array, ref_logits: jax.Array, input_ids: jax.Array, agent_mask: jax.Array,
                     beta: float | jax.Array) -> jax.Array:
    """The implicit PRM's token rewards from the two models' logits: [B, T, V] x2, ids [B, T] -> [B, T] float32.

    r_t = beta * (log pi_theta(y_t | y_<t) - log pi_ref(y_t | y_<t)) where agent_mask, else 0. Both
    models must have seen the same ids, mask and positions. Gradients flow into both logits; stop
    the reference's yourself (`jax.lax.stop_gradient`) when only the policy is trained.
    """
    return implicit_token_rewards(token_logprobs(logits, input_ids), token_logprobs(ref_logits, input_ids),
                                  agent_mask, beta)


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


def outcome_losses(rewards: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-row BCE(sigmoid(trajectory reward), outcome label in {0, 1} or soft): [B], [B] -> [B] float32."""
    return bce_with_logits(rewards.astype(jnp.float32), labels.astype(jnp.float32))


def outcome_loss(rewards: jax.Array, labels: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Mean `outcome_losses` over the rows where `valid` (bool [B]; None = all); scalar float32, 0 if none."""
    valid = jnp.ones(rewards.shape, bool) if valid is None else valid.astype(bool)
    # zero the inputs of invalid rows too, so a NaN there cannot meet a zero cotangent in the gradient
    per = outcome_losses(jnp.where(valid, rewards, 0.0), jnp.where(valid, labels, 0.0))
    return masked_mean(per, valid)


def aggregate_steps(rewards: jax.Array, valid: jax.Array, how: str = "min") -> jax.Array:
    """Combine step rewards [B, S] over the valid steps (bool [B, S]) into one score per row [B].

    min / sum / mean over valid steps, or the last valid step's reward; rows
    with no valid step score 0. `how` is static (a Python string) under jit.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    valid = valid.astype(bool)
    count = jnp.sum(valid, axis=-1)
    if how == "min":
        out = jnp.min(jnp.where(valid, rewards, _BIG), axis=-1)
    elif how == "sum":
        out = jnp.sum(jnp.where(valid, rewards, 0.0), axis=-1)
    elif how == "mean":
        out = jnp.sum(jnp.where(valid, rewards, 0.0), axis=-1) / jnp.maximum(count, 1)
    else:
        s = rewards.shape[-1]
        last = jnp.max(jnp.where(valid, jnp.arange(s), -1), axis=-1)
        out = jnp.take_along_axis(rewards, jnp.clip(last, 0, s - 1)[:, None], axis=-1)[:, 0]
    return jnp.where(count > 0, out, 0.0)


def implicit_scores(token_rewards: jax.Array, step_starts: jax.Array, step_ends: jax.Array, how: str = "min"
                    ) -> tuple[jax.Array, jax.Array]:
    """What `ImplicitPRM` reports: (scores [B], step rewards [B, S]) from token rewards [B, T].

    step_starts, step_ends: int [B, S], each step's first and last token (inclusive), -1 = no step.
    how "sum" scores the trajectory reward (every agent token, the outcome loss's quantity; equal
    to the sum of the steps when every agent token lies in a step); min / last / mean aggregate
    the valid steps (`aggregate_steps`). `how` is static under jit.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    steps = step_rewards(token_rewards, step_starts, step_ends)
    if how == "sum":
        return trajectory_rewards(token_rewards), steps
    return aggregate_steps(steps, step_ends >= 0, how), steps
