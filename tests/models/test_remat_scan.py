"""remat and scan_layers change how the decoder runs, never what it computes.

Forward logits and parameter gradients of every (remat, scan_layers) combination equal the
unrolled, non-rematerialised model's to 1e-5 (tiny random model, float32), with the KV cache
too; the jaxpr shows that the options really took effect.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models import KVCache, LlamaForCausalLM, ModelConfig
from agentrm_jax.models.lora import add_lora

CFG = ModelConfig.tiny(num_layers=3, qkv_bias=True, o_bias=True, mlp_bias=True)
VARIANTS = [("none", True), ("full", False), ("full", True), ("dots_saveable", False), ("dots_saveable", True)]


def random_model(config: ModelConfig, seed: int = 0) -> LlamaForCausalLM:
    model = LlamaForCausalLM(config, rngs=None)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        noise = rng.standard_normal(var.shape)
        var.set_value(jnp.asarray(1 + 0.1 * noise if "norm" in ".".join(map(str, path)) else 0.1 * noise,
                                  jnp.float32))
    return model


def _inputs():
    rng = np.random.default_rng(2)
    ids = jnp.asarray(rng.integers(0, CFG.vocab_size, size=(3, 14)), jnp.int32)
    mask = jnp.ones((3, 14), jnp.int32).at[0, :5].set(0).at[2, 11:].set(0)
    weights = jnp.asarray(rng.standard_normal((3, 14, CFG.vocab_size)), jnp.float32)
    return ids, mask, weights


def _loss(model, ids, mask, weights):
    return jnp.sum(model(ids, mask) * weights * mask[..., None])


@nnx.jit
def loss_and_grads(model, ids, mask, weights):
    return nnx.value_and_grad(_loss)(model, ids, mask, weights)


def _flat(grads) -> dict[str, np.ndarray]:
    return {".".join(map(str, p)): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
            for p, v in nnx.to_flat_state(grads)}


def _variant(remat: str, scan: bool) -> LlamaForCausalLM:
    return random_model(dataclasses.replace(CFG, remat=remat, scan_layers=scan), seed=5)


@pytest.fixture(scope="module")
def reference():
    ids, mask, weights = _inputs()
    model = _variant("none", False)
    loss, grads = loss_and_grads(model, ids, mask, weights)
    return np.asarray(model(ids, mask)), float(loss), _flat(grads)


@pytest.mark.parametrize("remat,scan", VARIANTS, ids=lambda v: str(v))
def test_forward_and_gradients_equal_the_unrolled_model(reference, remat, scan):
    logits_ref, loss_ref, grads_ref = reference
    ids, mask, weights = _inputs()
    model = _variant(remat, scan)
    np.testing.assert_allclose(np.asarray(nnx.jit(lambda m, i, k: m(i, k))(model, ids, mask)), logits_ref,
                               atol=1e-5, rtol=1e-5)
    loss, grads = loss_and_grads(model, ids, mask, weights)
    assert abs(float(loss) - loss_ref) <= 1e-5 * max(1.0, abs(loss_ref))
    grads = _flat(grads)
    assert grads.keys() == grads_ref.keys()  # the same per-layer parameters: layers.{i}.…
    for name, g in grads.items():
        np.testing.assert_allclose(g, grads_ref[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_scan_decode_with_the_kv_cache_matches_unrolled():
    ids, mask, _ = _inputs()
    outs = []
    for scan in (False, True):
        model = _variant("none", scan)
        step = nnx.jit(lambda m, i, k, c: m(i, k, cache=c))
        logits, cache = step(model, ids[:, :9], mask[:, :9], KVCache.empty(CFG, 3, 16))
        got = [np.asarray(logits)]
        for t in range(9, 14):
            logits, cache = step(model, ids[:, t:t + 1], mask[:, t:t + 1], cache)
            got.append(np.asarray(logits))
        assert len(cache.keys) == CFG.num_layers and cache.keys[0].shape == (3, CFG.num_kv_heads, 16, CFG.head_dim)
        outs.append((np.concatenate(got, axis=1), cache))
    np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(outs[0][1].keys + outs[0][1].values, outs[1][1].keys + outs[1][1].values):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


def test_scan_with_lora_adapters_trains_the_same_adapters():
    ids, mask, weights = _inputs()
    results = []
    for scan in (False, True):
        model = add_lora(_variant("full", scan), rank=2, alpha=4.0, seed=0)
        grad_fn = nnx.jit(lambda m, i, k, w: nnx.grad(_loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(m, i, k, w))
        results.append(_flat(grad_fn(model, ids, mask, weights)))
    assert results[0].keys() == results[1].keys() and any("lora_b" in k for k in results[0])
    for name in results[0]:
        np.testing.assert_allclose(results[1][name], results[0][name], atol=1e-5, rtol=1e-5, err_msg=name)


def _eqns(model, ids, mask):
    graphdef, state = nnx.split(model)
    return jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(ids, mask))(state).jaxpr.eqns


def _primitive_names(model, ids, mask) -> list[str]:
    return [eqn.primitive.name for eqn in _eqns(model, ids, mask)]


def test_the_options_show_in_the_program():
    ids, mask, _ = _inputs()
    unrolled = _primitive_names(_variant("none", False), ids, mask)
    scanned = _primitive_names(_variant("none", True), ids, mask)
    remat = _primitive_names(_variant("full", False), ids, mask)
    assert "scan" not in unrolled and "scan" in scanned
    assert not any("remat" in p or "checkpoint" in p for p in unrolled)
    assert sum("remat" in p or "checkpoint" in p for p in remat) == CFG.num_layers
    assert len(scanned) < len(unrolled)  # one layer's body, not three
    policies = {e.params.get("policy") for e in _eqns(_variant("dots_saveable", False), ids, mask)
                if "remat" in e.primitive.name or "checkpoint" in e.primitive.name}
    assert policies == {jax.checkpoint_policies.dots_saveable}


def test_unknown_remat_policy_is_refused_by_name():
    with pytest.raises(ValueError, match=r"remat='dots'.*'none', 'full', 'dots_saveable'"):
        ModelConfig.tiny(remat="dots")
    with pytest.raises(ValueError, match="scan_layers must be True or False"):
        ModelConfig.tiny(scan_layers="yes")
