"""attention_impl="dot_product" (jax.nn.dot_product_attention) computes what "grouped" does.

On CPU jax runs its XLA reference form; the check is the contract: left padding, a fully
padded row, and decode through the KV cache, to 1e-5 in float32.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models import KVCache, LlamaForCausalLM, ModelConfig
from agentrm_jax.models.llama import dot_product_attention, grouped_attention

CFG = ModelConfig.tiny(num_heads=6, num_kv_heads=2, qkv_bias=True, o_bias=True)


def random_model(config: ModelConfig, seed: int = 0) -> LlamaForCausalLM:
    model = LlamaForCausalLM(config, rngs=None)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        noise = rng.standard_normal(var.shape)
        var.set_value(jnp.asarray(1 + 0.1 * noise if "norm" in ".".join(map(str, path)) else 0.1 * noise,
                                  jnp.float32))
    return model


@nnx.jit
def forward(model, ids, mask):
    return model(ids, mask)


@nnx.jit
def forward_cached(model, ids, mask, cache):
    return model(ids, mask, cache=cache)


def _inputs():
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(0, CFG.vocab_size, size=(4, 20)), jnp.int32)
    mask = np.ones((4, 20), np.int32)
    mask[0, :7] = 0  # left padded
    mask[2, :] = 0  # fully padded
    mask[3, :2] = 0
    return ids, jnp.asarray(mask)


def test_the_two_kernels_agree_on_masked_grouped_queries():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((3, 5, 6, 8)), jnp.float32)  # [B, T, H, Dh]
    k = jnp.asarray(rng.standard_normal((3, 2, 9, 8)), jnp.float32)  # [B, K, S, Dh]
    v = jnp.asarray(rng.standard_normal((3, 2, 9, 8)), jnp.float32)
    allowed = rng.random((3, 5, 9)) < 0.6
    allowed[1] = False  # a fully masked row
    allowed = jnp.asarray(allowed)
    a, b = grouped_attention(q, k, v, allowed), dot_product_attention(q, k, v, allowed)
    assert a.shape == b.shape == (3, 5, 6, 8)
    assert np.isfinite(np.asarray(b)).all()
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def models():
    grouped = random_model(CFG, seed=4)
    dot = random_model(dataclasses.replace(CFG, attention_impl="dot_product"), seed=4)
    return grouped, dot


def test_forward_matches_with_left_padding_and_a_fully_padded_row(models):
    ids, mask = _inputs()
    a, b = (np.asarray(forward(m, ids, mask)) for m in models)
    assert np.isfinite(b).all()
    real = np.asarray(mask).astype(bool)
    assert np.abs(a - b)[real].max() <= 1e-5
    assert np.abs(a - b).max() <= 1e-4  # padded positions too: both use a finite mask value


def test_decode_with_the_kv_cache_matches(models):
    ids, mask = _inputs()
    outs = []
    for model in models:
        logits, cache = forward_cached(model, ids[:, :12], mask[:, :12], KVCache.empty(CFG, 4, 24))
        steps = [np.asarray(logits)]
        for t in range(12, 20):
            logits, cache = forward_cached(model, ids[:, t:t + 1], mask[:, t:t + 1], cache)
            steps.append(np.asarray(logits))
        outs.append(np.concatenate(steps, axis=1))
    real = np.asarray(mask).astype(bool)
    assert np.abs(outs[0] - outs[1])[real].max() <= 1e-5
    full = np.asarray(forward(models[0], ids, mask))
    assert np.abs(outs[1] - full)[real].max() <= 1e-5


def test_unknown_attention_impl_is_refused_by_name():
    with pytest.raises(ValueError, match=r"attention_impl='flash'.*'grouped', 'dot_product'"):
        ModelConfig.tiny(attention_impl="flash")


def test_the_config_field_chooses_the_kernel(monkeypatch):
    from agentrm_jax.models import llama

    calls = []
    for name, fn in list(llama.ATTENTION.items()):
        monkeypatch.setitem(llama.ATTENTION, name, lambda *a, _n=name, _f=fn: calls.append(_n) or _f(*a))
    ids, mask = _inputs()
    for impl in ("dot_product", "grouped"):
        random_model(dataclasses.replace(CFG, attention_impl=impl))(ids[:1, :3], mask[:1, :3])
    assert calls == ["dot_product"] * CFG.num_layers + ["grouped"] * CFG.num_layers
