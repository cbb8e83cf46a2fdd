"""The reward models as pure functions of a model and a batch of token arrays (no tokenizer, no records).

A *model* here is any callable `(input_ids [B, T], attention_mask [B, T]) -> [B, T] values` (a
`ValueModel`) or `-> [B, T, V] logits` (a `LlamaForCausalLM`, or your own): an NNX module used
directly or under `nnx.jit`, or, inside `jax.jit`, a module rebuilt from `(graphdef, state)` with
`nnx.merge` (see docs/API.md). Nothing is mutated; outputs are float32 arrays.

A *batch* is a dict of arrays in the padding contract of `rewards.scoring.pad_batch` (rows may be
left- or right-padded; masks are explicit, never derived from pad ids; positions come from the
mask's cumulative sum inside the model):

    input_ids       int   [B, T]
    attention_mask  bool  [B, T]   True on real tokens
    agent_mask      bool  [B, T]   implicit: True on the agent's (assistant) tokens
    step_starts     int   [B, S]   implicit: first token of each step, -1 = no step
    step_ends       int   [B, S]   implicit: last token of each step's action, -1 = no step
    prefix_ends     int   [B, S]   explicit: token where step i's score is read, -1 = none

    explicit_batch_scores(model, batch, loss=) -> (trajectory scores [B], step scores [B, S])
    implicit_batch_scores(policy, reference, batch, beta=, how=) -> (scores [B], step rewards [B, S])

Unused keys are ignored. Fully padded rows give finite outputs (0) and finite gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax

from agentrm_jax.rewards.explicit import explicit_scores, last_token_index
from agentrm_jax.rewards.implicit import implicit_scores, token_log_ratios

__all__ = ["explicit_batch_scores", "implicit_batch_scores"]

Model = Callable[[jax.Array, jax.Array], jax.Array]


def explicit_batch_scores(model: Model, batch: Mapping[str, jax.Array], *, loss: str = "mse"
                          ) -> tuple[jax.Array, jax.Array]:
    """What `ExplicitRM.score_with_steps` computes for one batch: (scores [B], step scores [B, S]), float32.

    model: (input_ids, attention_mask) -> head output [B, T]. A row's score is read at its last real
    token (from the mask: left or right padding), step i's at `prefix_ends[i]` (0 where -1).
    loss: how the head was trained ("mse": scores are the output; "bce": sigmoid of it); static.
    """
    values = model(batch["input_ids"], batch["attention_mask"])  # [B, T]
    last = last_token_index(batch["attention_mask"])[:, None]  # [B, 1]
    return explicit_scores(values, last, loss=loss)[:, 0], explicit_scores(values, batch["prefix_ends"], loss=loss)


def implicit_batch_scores(policy: Model, reference: Model, batch: Mapping[str, jax.Array], *,
                          beta: float | jax.Array, how: str = "min") -> tuple[jax.Array, jax.Array]:
    """What `ImplicitPRM.score_with_steps` computes for one batch: (scores [B], step rewards [B, S]), float32.

    policy, reference: (input_ids, attention_mask) -> logits [B, T, V] (pi_theta and pi_ref, same
    vocabulary). Token rewards are beta * (log pi_theta - log pi_ref) on agent tokens inside the mask;
    a step's reward sums its tokens; `how` (static) makes the score: "sum" = the trajectory reward,
    min / last / mean over the valid steps. Gradients flow into both models (stop the reference's
    with `jax.lax.stop_gradient` inside `reference` when only the policy is trained).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    agent = batch["agent_mask"].astype(bool) & mask.astype(bool)
    rewards = token_log_ratios(policy(ids, mask), reference(ids, mask), ids, agent, beta)  # [B, T]
    return implicit_scores(rewards, batch["step_starts"], batch["step_ends"], how)
