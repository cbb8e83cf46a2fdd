"""Bradley–Terry loss: values, margin, and that it trains a scorer on a separable toy set."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agentrm_jax.rewards import bradley_terry_loss, pairwise_accuracy


def test_values_and_margin():
    chosen, rejected = jnp.asarray([2.0, 0.0]), jnp.asarray([1.0, 0.0])
    np.testing.assert_allclose(float(bradley_terry_loss(chosen, rejected)),
                               np.mean([np.log1p(np.exp(-1.0)), np.log(2.0)]), rtol=1e-6)
    assert float(bradley_terry_loss(chosen, rejected, margin=1.0)) > float(bradley_terry_loss(chosen, rejected))
    assert float(pairwise_accuracy(chosen, rejected)) == 0.5


def test_loss_decreases_on_separable_pairs():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=8)
    a, b = rng.normal(size=(64, 8)), rng.normal(size=(64, 8))
    better = (a @ direction > b @ direction)[:, None]
    chosen, rejected = jnp.asarray(np.where(better, a, b)), jnp.asarray(np.where(better, b, a))

    def loss(w):
        return bradley_terry_loss(chosen @ w, rejected @ w, margin=0.1)

    w = jnp.zeros(8)
    opt = optax.adam(0.1)
    state = opt.init(w)
    losses = []
    for _ in range(30):
        value, grad = jax.value_and_grad(loss)(w)
        updates, state = opt.update(grad, state)
        w = optax.apply_updates(w, updates)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0] and all(x >= y - 1e-6 for x, y in zip(losses[:5], losses[1:6]))
    assert float(pairwise_accuracy(chosen @ w, rejected @ w)) > 0.95
