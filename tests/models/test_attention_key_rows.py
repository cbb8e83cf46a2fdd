"""Keys-first scores (models/llama._scores with key_rows): what CPU decode uses, because XLA:CPU's dot
is faster with the long keys as its row operand. It must compute what the plain form does, values and
gradients, with and without a shared prefix, and grouped_attention must pick it only for few query
rows of a batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentrm_jax.models.llama import KEY_ROWS_MAX_QUERIES, _grouped_attention_block, grouped_attention


def _inputs(t, b=3, h=6, kv=2, s=40, p=5, dh=8, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, h, dh)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
    allowed = rng.random((b, t, s)) < 0.6
    allowed[1, 0] = False  # a query that sees no row slot
    shared = (jnp.asarray(rng.standard_normal((kv, p, dh)), jnp.float32),
              jnp.asarray(rng.standard_normal((kv, p, dh)), jnp.float32), jnp.asarray(rng.random(p) < 0.7))
    return q, k, v, jnp.asarray(allowed), shared


@pytest.mark.parametrize("t", [1, 4])
@pytest.mark.parametrize("with_shared", [False, True])
def test_keys_first_scores_give_the_plain_attention(t, with_shared):
    q, k, v, allowed, shared = _inputs(t)
    shared = shared if with_shared else None
    plain = _grouped_attention_block(q, k, v, allowed, shared)
    keys_first = _grouped_attention_block(q, k, v, allowed, shared, key_rows=True)
    np.testing.assert_allclose(np.asarray(keys_first), np.asarray(plain), atol=1e-6, rtol=1e-6)

    def loss(key_rows):
        return lambda q, k, v: jnp.sum(jnp.sin(_grouped_attention_block(q, k, v, allowed, shared, key_rows=key_rows)))
    for a, b in zip(jax.grad(loss(True), argnums=(0, 1, 2))(q, k, v), jax.grad(loss(False), argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def _uses_keys_first(q, k, v, allowed) -> bool:
    return "optimization_barrier" in str(jax.make_jaxpr(grouped_attention)(q, k, v, allowed))


def test_grouped_attention_takes_keys_first_for_decode_rows_only():
    if jax.default_backend() != "cpu":
        pytest.skip("the rule is CPU's; accelerators keep the plain dot")
    q, k, v, allowed, _ = _inputs(1)
    assert _uses_keys_first(q, k, v, allowed)  # decode: 3 rows x 1 token
    assert not _uses_keys_first(q[:1], k[:1], v[:1], allowed[:1])  # one row: no gain measured
    # G = 6 / 2 = 3 query heads per KV head: 3 * t query rows against the limit
    at_limit = KEY_ROWS_MAX_QUERIES // 3
    assert _uses_keys_first(*_inputs(at_limit)[:4])
    assert not _uses_keys_first(*_inputs(at_limit + 1)[:4])  # a prefill keeps the plain form


def test_keys_first_with_a_shared_prefix_matches_in_its_gradients_too():
    q, k, v, allowed, (shared_k, shared_v, shared_allowed) = _inputs(1)

    def loss(key_rows):
        return lambda sk, sv: jnp.sum(jnp.sin(_grouped_attention_block(
            q, k, v, allowed, (sk, sv, shared_allowed), key_rows=key_rows)))
    for a, b in zip(jax.grad(loss(True), argnums=(0, 1))(shared_k, shared_v),
                    jax.grad(loss(False), argnums=(0, 1))(shared_k, shared_v)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    jaxpr = str(jax.make_jaxpr(lambda *a: grouped_attention(*a))(q, k, v, allowed, (shared_k, shared_v, shared_allowed)))
    assert jaxpr.count("optimization_barrier") == 2  # the shared prefix's scores are formed keys-first too
