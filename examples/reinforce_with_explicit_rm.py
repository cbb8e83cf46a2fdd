"""Our explicit RM as the reward of a user-written REINFORCE update, with plain jax.jit / jax.grad / optax.

A policy samples completions for left-padded prompts (one fixed-shape buffer, so everything jits
once); the RM (a `ValueModel`) scores each sequence at its last real token (`explicit_scores`);
the update is REINFORCE with a mean baseline, loss = -mean_b((r_b - mean r) * sum_t log pi(y_bt)).
Models are (graphdef, state) pairs: the state is a plain pytree that jax.grad and optax see.

    python examples/reinforce_with_explicit_rm.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import ValueModel, explicit_scores, last_token_index, token_logprobs


def main(steps: int = 3, batch: int = 4, prompt_len: int = 6, new_tokens: int = 5, lr: float = 1e-2,
         seed: int = 0, policy=None, rm: ValueModel | None = None) -> dict:
    config = ModelConfig.tiny()
    policy = policy if policy is not None else init_model(config, seed=seed)
    rm = rm if rm is not None else ValueModel.create(init_model(config, seed=seed + 1), seed=seed + 2)
    graphdef, params = nnx.split(policy)
    rm_graphdef, rm_state = nnx.split(rm)
    total = prompt_len + new_tokens

    @jax.jit
    def sample(params, ids, mask, key):  # fill the completion slots one token at a time
        def one(t, carry):
            ids, mask = carry
            logits = nnx.merge(graphdef, params)(ids, mask)  # [B, T, V]
            token = jax.random.categorical(jax.random.fold_in(key, t), logits[:, prompt_len + t - 1])
            return ids.at[:, prompt_len + t].set(token), mask.at[:, prompt_len + t].set(True)
        return jax.lax.fori_loop(0, new_tokens, one, (ids, mask))

    @jax.jit
    def reward(rm_state, ids, mask):  # [B]: the RM's score at each row's last real token
        values = nnx.merge(rm_graphdef, rm_state)(ids, mask)  # [B, T]
        return explicit_scores(values, last_token_index(mask)[:, None])[:, 0]

    def loss_fn(params, ids, mask, advantages):
        logp = token_logprobs(nnx.merge(graphdef, params)(ids, mask), ids)  # [B, T]
        completion = jnp.arange(total) >= prompt_len  # [T]: only sampled tokens carry the gradient
        return -jnp.mean(advantages * jnp.sum(jnp.where(completion & mask, logp, 0.0), axis=-1))

    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def update(params, opt_state, ids, mask, advantages):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids, mask, advantages)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, prompt_len + 1, batch)  # prompts of varied length, left-padded
    mask = np.arange(total)[None] >= (prompt_len - lengths)[:, None]
    mask[:, prompt_len:] = False  # completion slots: not yet real
    ids = np.where(mask, rng.integers(3, config.vocab_size, (batch, total)), 0).astype(np.int32)
    history = {"reward": [], "loss": []}
    for step in range(steps):
        out_ids, out_mask = sample(params, ids, mask, jax.random.key(step))
        r = reward(rm_state, out_ids, out_mask)
        params, opt_state, loss = update(params, opt_state, out_ids, out_mask, r - jnp.mean(r))
        history["reward"].append(float(jnp.mean(r)))
        history["loss"].append(float(loss))
    history["params"] = params
    return history


if __name__ == "__main__":
    result = main()
    print("mean reward per step:", np.round(result["reward"], 4), "loss:", np.round(result["loss"], 4))
