"""Query-blocked attention (models/llama.grouped_attention above MAX_SCORE_BYTES) computes what
the all-at-once form does: values and gradients, with a shared prefix, masked rows and a query
count that is not a multiple of the block; and a whole model forward under a tiny budget."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.models import llama
from agentrm_jax.models.llama import grouped_attention, query_block_rows


def test_block_rows_keep_one_blocks_scores_under_the_budget():
    assert query_block_rows(8, 9, 512, 512, max_score_bytes=2**30) == 512  # fits: one block
    per_query = 8 * 9 * 12416 * 4
    block = query_block_rows(8, 9, 8192, 12416, max_score_bytes=512 * 2**20)
    assert block % 8 == 0 and 16 <= block < 8192
    assert (block - 8) * per_query <= 512 * 2**20  # within the multiple-of-8 rounding
    blocks = -(-8192 // block)
    assert blocks <= -(-8192 * per_query // (512 * 2**20))  # no more blocks than the budget needs
    assert query_block_rows(8, 9, 2049, 2048, max_score_bytes=2048 * 8 * 9 * 2048 * 4) == 1032  # 2 even blocks
    assert query_block_rows(8, 9, 8192, 10**7, max_score_bytes=1) == 16  # never below 16 rows


def _attention_inputs(seed=0, b=2, t=37, h=6, kv=2, s=40, p=5, dh=8):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, h, dh)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, kv, s, dh)), jnp.float32)
    allowed = rng.random((b, t, s)) < 0.6
    allowed[1, 3] = False  # one query that may see no row slot
    shared = (jnp.asarray(rng.standard_normal((kv, p, dh)), jnp.float32),
              jnp.asarray(rng.standard_normal((kv, p, dh)), jnp.float32), jnp.asarray(rng.random(p) < 0.7))
    return q, k, v, jnp.asarray(allowed), shared


@pytest.mark.parametrize("with_shared", [False, True])
def test_blocked_attention_equals_all_at_once(with_shared):
    q, k, v, allowed, shared = _attention_inputs()
    shared = shared if with_shared else None
    whole = grouped_attention(q, k, v, allowed, shared, max_score_bytes=2**40)
    tiny = 1  # 16-query blocks: 37 queries pad to 48 in 3 blocks
    blocked = grouped_attention(q, k, v, allowed, shared, max_score_bytes=tiny)
    assert blocked.shape == whole.shape == q.shape
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(whole), atol=1e-6, rtol=1e-6)

    def loss(budget):
        return lambda q, k, v: jnp.sum(jnp.sin(grouped_attention(q, k, v, allowed, shared, max_score_bytes=budget)))
    g_whole = jax.grad(loss(2**40), argnums=(0, 1, 2))(q, k, v)
    g_blocked = jax.grad(loss(tiny), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_blocked, g_whole):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_a_model_forward_under_a_tiny_score_budget_matches(monkeypatch):
    model = init_model(ModelConfig.tiny(num_heads=4, num_kv_heads=2), seed=3)
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(0, model.config.vocab_size, size=(3, 50)), jnp.int32)
    mask = np.ones((3, 50), np.int32)
    mask[0, :11] = 0  # left padding
    mask = jnp.asarray(mask)
    whole = np.asarray(model(ids, mask))  # eager: each call traces with the budget of the moment
    monkeypatch.setattr(llama, "MAX_SCORE_BYTES", 1)
    blocked = np.asarray(model(ids, mask))
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(blocked[real], whole[real], atol=1e-5, rtol=1e-5)


def test_the_compiled_blocked_program_needs_a_fraction_of_the_scratch_memory():
    b, t, h, kv, dh = 2, 1024, 4, 2, 16  # whole scores: 2 * 4 * 1024 * 1024 * 4 B = 32 MiB
    shapes = (jax.ShapeDtypeStruct((b, t, h, dh), jnp.float32), jax.ShapeDtypeStruct((b, kv, t, dh), jnp.float32),
              jax.ShapeDtypeStruct((b, kv, t, dh), jnp.float32), jax.ShapeDtypeStruct((b, t, t), jnp.bool_))

    def scratch_bytes(budget):
        program = jax.jit(lambda q, k, v, a: grouped_attention(q, k, v, a, max_score_bytes=budget))
        return program.lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    whole, blocked = scratch_bytes(2**40), scratch_bytes(2**20)
    assert whole >= 32 * 2**20  # the scores buffer at least
    assert blocked <= whole / 4


def test_the_blocked_gradient_keeps_the_scratch_bound_too():
    b, t, h, kv, dh = 2, 1024, 4, 2, 16
    shapes = (jax.ShapeDtypeStruct((b, t, h, dh), jnp.float32), jax.ShapeDtypeStruct((b, kv, t, dh), jnp.float32),
              jax.ShapeDtypeStruct((b, kv, t, dh), jnp.float32), jax.ShapeDtypeStruct((b, t, t), jnp.bool_))

    def scratch_bytes(budget):
        loss = lambda q, k, v, a: jnp.sum(grouped_attention(q, k, v, a, max_score_bytes=budget) ** 2)
        program = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return program.lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    whole, blocked = scratch_bytes(2**40), scratch_bytes(2**20)
    assert whole >= 32 * 2**20
    assert blocked <= whole / 4
