"""Explicit RM: value head placement, losses, masks and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import HeadConfig, ValueModel, gather_positions, value_targets_loss
from agentrm_jax.rewards.explicit import bce_with_logits, last_token_index


@pytest.fixture(scope="module")
def value_model():
    return ValueModel.create(init_model(ModelConfig.tiny(), seed=0), HeadConfig(mlp_size=16, bias=True), seed=1)


def test_left_and_right_padding_give_the_same_last_token_score(value_model):
    rng = np.random.default_rng(0)
    tokens = [rng.integers(3, 211, n) for n in (5, 11, 8)]
    t = 14
    right = np.full((3, t), 2), np.zeros((3, t), bool)
    left = np.full((3, t), 2), np.zeros((3, t), bool)
    for i, ids in enumerate(tokens):
        right[0][i, :len(ids)], right[1][i, :len(ids)] = ids, True
        left[0][i, t - len(ids):], left[1][i, t - len(ids):] = ids, True
    scores = []
    for ids, mask in (right, left):
        values = value_model(jnp.asarray(ids), jnp.asarray(mask))
        scores.append(np.asarray(gather_positions(values, last_token_index(jnp.asarray(mask))[:, None])[:, 0]))
    alone = [float(value_model(jnp.asarray(ids[None]), jnp.ones((1, len(ids)), bool))[0, -1]) for ids in tokens]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    np.testing.assert_allclose(scores[0], alone, atol=1e-5)


def test_losses_match_numpy():
    values = jnp.asarray([[0.2, -1.0, 3.0, 0.5], [1.5, 0.0, -0.5, 2.0]])
    index = jnp.asarray([[1, 3], [0, -1]])
    targets = jnp.asarray([[1.0, 0.0], [0.5, np.nan]])  # NaN target at an invalid slot must not leak
    picked = np.array([-1.0, 0.5, 1.5])
    goal = np.array([1.0, 0.0, 0.5])
    mse = float(value_targets_loss(values, index, targets, loss="mse"))
    np.testing.assert_allclose(mse, np.mean((picked - goal) ** 2), rtol=1e-6)
    bce = float(value_targets_loss(values, index, targets, loss="bce"))
    p = 1 / (1 + np.exp(-picked))
    np.testing.assert_allclose(bce, np.mean(-(goal * np.log(p) + (1 - goal) * np.log(1 - p))), rtol=1e-5)
    assert float(bce_with_logits(jnp.asarray(100.0), jnp.asarray(1.0))) < 1e-6  # stable at large logits
    assert float(value_targets_loss(values, -jnp.ones_like(index), targets)) == 0.0
    with pytest.raises(ValueError, match="loss must be one of"):
        value_targets_loss(values, index, targets, loss="hinge")


def test_gradients_reach_head_and_backbone_but_not_through_padding(value_model):
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(3, 211, (2, 10)))
    mask = jnp.asarray(np.arange(10)[None, :] < np.array([[10], [6]]))  # row 1: 4 padded slots
    index = jnp.asarray([[4, 9], [2, 5]])
    targets = jnp.asarray([[0.3, 0.9], [0.1, 1.0]])

    def loss_of(model, input_ids):
        return value_targets_loss(model(input_ids, mask), index, targets, loss="mse")

    grads = nnx.grad(loss_of)(value_model, ids)
    head_norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads.head))
    backbone_norm = float(jnp.abs(grads.backbone.layers[0].attn.q_proj[...]).sum())
    assert head_norm > 0 and backbone_norm > 0
    # padding never contributes: changing a padded token leaves the loss bit-identical
    changed = ids.at[1, 7].set((ids[1, 7] + 1) % 211)  # a padded slot's token: loss unchanged
    assert float(loss_of(value_model, changed)) == float(loss_of(value_model, ids))
    changed = ids.at[1, 1].set((ids[1, 1] + 1) % 211)  # a real token before a target: loss changes
    assert float(loss_of(value_model, changed)) != float(loss_of(value_model, ids))


def test_head_only_training_leaves_backbone_gradient_out(value_model):
    ids = jnp.asarray(np.random.default_rng(2).integers(3, 211, (1, 6)))
    mask = jnp.ones((1, 6), bool)
    diff = nnx.DiffState(0, nnx.All(nnx.Param, nnx.PathContains("head")))

    def loss_of(model):
        return value_targets_loss(model(ids, mask), jnp.asarray([[5]]), jnp.asarray([[1.0]]))

    grads = nnx.grad(loss_of, argnums=diff)(value_model)
    paths = {p[0] for p, _ in nnx.to_flat_state(grads)}
    assert paths == {"head"}
