"""The NNX decoder on its own: padding and batch invariances, the KV cache, dtypes, metadata, errors.

Models are filled with numpy noise instead of `init_model` (eager random init compiles one
kernel per shape: seconds on this CPU); forwards are jitted for the same reason.
"""

from __future__ import annotations

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from agentrm_jax.models import (KVCache, LlamaForCausalLM, ModelConfig, init_model, load_model, save_pretrained,
                                to_hf_state_dict)
from agentrm_jax.models.llama import positions_from_mask

# Every optional parameter on, so every code path carries non-trivial values.
CFG = ModelConfig.tiny(qkv_bias=True, o_bias=True, mlp_bias=True)
PAD = 2  # = eos, as in SmolLM2: masks must never be derived from token values


def random_model(config: ModelConfig, seed: int = 0, **kw) -> LlamaForCausalLM:
    """Noise-filled model: norms near 1, every other weight and bias N(0, 0.1)."""
    model = LlamaForCausalLM(config, rngs=None, **kw)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        noise = rng.standard_normal(var.shape)
        value = 1.0 + 0.1 * noise if "norm" in ".".join(map(str, path)) else 0.1 * noise
        var.set_value(jnp.asarray(value, var.get_value().dtype))
    return model


@nnx.jit
def forward(model, ids, mask):
    return model(ids, mask)


@nnx.jit
def forward_cached(model, ids, mask, cache):
    return model(ids, mask, cache=cache)


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=3)


def _ids(b, t, seed=0):
    ids = np.random.default_rng(seed).integers(0, CFG.vocab_size, size=(b, t))
    ids[:, 3::11] = PAD  # real tokens equal to the pad id must still count as real
    return jnp.asarray(ids, jnp.int32)


def _np(x):
    return np.asarray(x)


# ---------------------------------------------------------------- padding and batch invariances


def test_padding_does_not_change_real_logits(model):
    t, left, right = 40, 23, 9
    ids = _ids(2, t)
    ones = jnp.ones_like(ids)
    plain = _np(forward(model, ids, ones))
    # Padding slots hold random tokens (not PAD) so a mask bug cannot hide behind benign pad embeddings.
    noise = _ids(2, left + right, seed=9)
    padded = jnp.concatenate([noise[:, :left], ids, noise[:, left:]], axis=1)
    mask = jnp.concatenate([jnp.zeros((2, left), jnp.int32), ones, jnp.zeros((2, right), jnp.int32)], axis=1)
    both = _np(forward(model, padded, mask))
    assert np.abs(both[:, left:left + t] - plain).max() <= 1e-5
    # Pure left and pure right padding, rows padded differently within one batch.
    lp = jnp.concatenate([noise[:, :left], ids], axis=1)
    lmask = jnp.concatenate([jnp.zeros((2, left), jnp.int32), ones], axis=1).at[1, :left].set(1)
    lout = _np(forward(model, lp, lmask))
    assert np.abs(lout[0, left:] - plain[0]).max() <= 1e-5
    rp = jnp.concatenate([ids, noise[:, :right]], axis=1)
    rout = _np(forward(model, rp, jnp.concatenate([ones, jnp.zeros((2, right), jnp.int32)], axis=1)))
    assert np.abs(rout[:, :t] - plain).max() <= 1e-5
    # Sanity: the model does look at context (otherwise the checks above are vacuous).
    shifted = _np(forward(model, ids.at[:, 0].set((ids[:, 0] + 1) % CFG.vocab_size), ones))
    assert np.abs(shifted[:, -1] - plain[:, -1]).max() > 1e-3


def test_positions_count_real_tokens_only():
    # RoPE is shift-invariant, so a left-padded forward with arange positions gives the same logits:
    # the padding tests above cannot see a position bug, this one does.
    mask = jnp.asarray([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(_np(positions_from_mask(mask)),
                                  [[0, 0, 0, 0, 1, 2], [0, 1, 2, 3, 3, 3], [0, 0, 0, 0, 0, 0]])


def test_rows_do_not_depend_on_batch_composition(model):
    ids = _ids(4, 16, seed=1)
    mask = jnp.ones_like(ids).at[0, :5].set(0).at[3, 11:].set(0)
    together = _np(forward(model, ids, mask))
    alone = _np(forward(model, ids[2:3], mask[2:3]))
    assert np.abs(together[2] - alone[0]).max() <= 1e-5
    reordered = _np(forward(model, ids[::-1], mask[::-1]))
    real = _np(mask).astype(bool)
    assert np.abs(reordered[::-1] - together)[real].max() <= 1e-5


def test_fully_padded_row_gives_finite_logits(model):
    ids = _ids(2, 8)
    mask = jnp.ones_like(ids).at[1].set(0)
    out = _np(forward(model, ids, mask))
    assert np.isfinite(out).all()
    logits, cache = forward_cached(model, ids, mask, KVCache.empty(CFG, 2, 8))
    assert np.isfinite(_np(logits)).all()
    assert np.abs(_np(logits)[0] - out[0]).max() <= 1e-5


# ---------------------------------------------------------------- KV cache


def _decode(model, ids, mask, prefill, cache):
    """Prefill `prefill` tokens into `cache`, then feed the rest one token at a time."""
    logits, cache = forward_cached(model, ids[:, :prefill], mask[:, :prefill], cache)
    steps = [_np(logits)]
    for t in range(prefill, ids.shape[1]):
        logits, cache = forward_cached(model, ids[:, t:t + 1], mask[:, t:t + 1], cache)
        steps.append(_np(logits))
    return np.concatenate(steps, axis=1), cache


def test_prefill_then_decode_matches_full_forward(model):
    ids = _ids(3, 24, seed=2)
    # row 0 left-padded, row 1 unpadded, row 2 ends in padding during decode
    mask = jnp.ones_like(ids).at[0, :6].set(0).at[2, 21:].set(0)
    full = _np(forward(model, ids, mask))
    got, cache = _decode(model, ids, mask, prefill=13, cache=KVCache.empty(CFG, 3, 28))
    real = _np(mask).astype(bool)
    assert np.abs(got - full)[real].max() <= 1e-5
    assert int(cache.index) == 24
    assert cache.keys[0].shape == (3, CFG.num_kv_heads, 28, CFG.head_dim)  # [B, K, S, Dh]
    np.testing.assert_array_equal(_np(cache.mask[:, :24]), real)
    assert not _np(cache.mask[:, 24:]).any()


def test_cache_pad_to_keeps_decoding_exact(model):
    ids = _ids(2, 20, seed=4)
    mask = jnp.ones_like(ids).at[1, :3].set(0)
    full = _np(forward(model, ids, mask))
    logits, cache = forward_cached(model, ids[:, :12], mask[:, :12], KVCache.empty(CFG, 2, 12))
    longer = cache.pad_to(20)
    assert longer.length == 20 and int(longer.index) == 12
    # keys/values are [B, K, S, Dh]: slots on axis 2
    assert longer.keys[1].shape == (2, CFG.num_kv_heads, 20, CFG.head_dim)
    np.testing.assert_array_equal(_np(longer.keys[1][:, :, :12]), _np(cache.keys[1]))
    assert not _np(longer.mask[:, 12:]).any() and not _np(longer.values[0][:, :, 12:]).any()
    steps = [_np(logits)]
    for t in range(12, 20):
        step, longer = forward_cached(model, ids[:, t:t + 1], mask[:, t:t + 1], longer)
        steps.append(_np(step))
    real = _np(mask).astype(bool)
    assert np.abs(np.concatenate(steps, 1) - full)[real].max() <= 1e-5
    with pytest.raises(ValueError, match="shrink"):
        cache.pad_to(4)


def test_cache_repeat_shares_a_prefill_between_samples(model):
    ids = _ids(2, 10, seed=5)
    mask = jnp.ones_like(ids).at[0, :4].set(0)
    _, cache = forward_cached(model, ids[:, :9], mask[:, :9], KVCache.empty(CFG, 2, 10))
    rep = cache.repeat(3)
    assert rep.keys[0].shape == (6, CFG.num_kv_heads, 10, CFG.head_dim) and rep.mask.shape == (6, 10)
    assert int(rep.index) == 9
    # Row-major: rows 0,1,2 come from prompt 0 and rows 3,4,5 from prompt 1.
    np.testing.assert_array_equal(_np(rep.values[1][4]), _np(cache.values[1][1]))
    np.testing.assert_array_equal(_np(rep.mask[2]), _np(cache.mask[0]))
    # The next token decoded from the shared prefill equals the full forward's last position.
    last = jnp.repeat(ids[:, 9:], 3, axis=0)
    step, _ = forward_cached(model, last, jnp.ones_like(last), rep)
    full = _np(forward(model, ids, mask))[:, 9]
    assert np.abs(_np(step)[:, 0] - np.repeat(full, 3, axis=0)).max() <= 1e-5


@pytest.mark.parametrize("impl,scan", [("grouped", False), ("dot_product", False), ("grouped", True)])
def test_a_shared_prefix_held_once_gives_every_row_its_whole_sequence_logits(impl, scan):
    """Rows that start with the same tokens: the prefix prefilled once at batch 1 (with a masked gap
    after it) and held as `KVCache.shared`, each row's own tokens (left-padded) prefilled and then
    decoded after it. Logits equal each whole row's forward, with either kernel and under scan."""
    import dataclasses

    cfg = dataclasses.replace(CFG, attention_impl=impl, scan_layers=scan)
    m = random_model(cfg, seed=3)
    ids = np.array(_ids(3, 26, seed=8))
    ids[:, :11] = ids[0, :11]  # 11 shared tokens, then 15 of each row's own
    mask = np.ones_like(ids)
    mask[1, 11:14] = 0  # row 1 has 12 own tokens (left padding inside its own region)
    full = _np(forward(m, jnp.asarray(ids), jnp.asarray(mask)))
    pre_ids = np.full((1, 16), PAD, np.int32)
    pre_ids[0, :11] = ids[0, :11]
    pre_mask = (np.arange(16) < 11).astype(np.int32)[None]  # right padding: a gap before the rows
    _, shared = forward_cached(m, jnp.asarray(pre_ids), jnp.asarray(pre_mask), KVCache.empty(cfg, 1, 16))
    cache = KVCache.empty(cfg, 3, 20).replace(shared=shared)
    logits, cache = forward_cached(m, jnp.asarray(ids[:, 11:20]), jnp.asarray(mask[:, 11:20]), cache)
    steps = [_np(logits)]
    for t in range(20, 26):
        logits, cache = forward_cached(m, jnp.asarray(ids[:, t:t + 1]), jnp.asarray(mask[:, t:t + 1]), cache)
        steps.append(_np(logits))
    got = np.concatenate(steps, axis=1)
    real = mask[:, 11:].astype(bool)
    assert np.abs(got - full[:, 11:])[real].max() <= 1e-5
    assert cache.shared.keys[0].shape == (1, cfg.num_kv_heads, 16, cfg.head_dim)  # held once
    rep = cache.repeat(2)
    assert rep.mask.shape == (6, 20) and rep.shared.keys[0].shape[0] == 1  # samples repeat rows, not the prefix


# ---------------------------------------------------------------- dtypes, init, metadata


def test_bf16_compute_with_f32_params_is_close_to_f32(model):
    bf16 = LlamaForCausalLM(CFG, dtype=jnp.bfloat16, rngs=None)
    nnx.update(bf16, nnx.state(model, nnx.Param))
    assert bf16.layers[0].mlp.gate_proj[...].dtype == jnp.float32  # params stay f32
    ids = _ids(2, 32, seed=6)
    mask = jnp.ones_like(ids).at[0, :5].set(0)
    a = _np(forward(model, ids, mask))
    b = _np(forward(bf16, ids, mask))
    real = _np(mask).astype(bool)
    assert b.dtype == np.float32 and np.isfinite(b).all()
    err = np.abs(a - b)[real].max()
    assert 0 < err < 0.1 * np.abs(a).max()  # differs (bf16 really used) but only by rounding
    assert np.mean(a.argmax(-1)[real] == b.argmax(-1)[real]) >= 0.9


def test_init_model_dtypes_and_seeds():
    cfg = ModelConfig.tiny(num_layers=1)
    a, b = init_model(cfg, seed=0), init_model(cfg, seed=0)
    np.testing.assert_array_equal(_np(a.layers[0].mlp.up_proj[...]), _np(b.layers[0].mlp.up_proj[...]))
    c = init_model(cfg, seed=1)
    assert not np.array_equal(_np(a.embed[...]), _np(c.embed[...]))
    assert 0.015 < float(jnp.std(a.embed[...])) < 0.025  # normal(0.02)
    np.testing.assert_array_equal(_np(a.layers[0].input_norm.weight[...]), 1.0)
    # Shapes only (a real bf16 init would compile every random kernel again).
    half = nnx.eval_shape(lambda: init_model(cfg, seed=0, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16))
    dtypes = {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(half, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("tied", [False, True])
def test_every_parameter_has_logical_axes_matching_its_rank(tied):
    m = LlamaForCausalLM(ModelConfig.tiny(tie_word_embeddings=tied, qkv_bias=True, o_bias=True, mlp_bias=True))
    flat = list(nnx.to_flat_state(nnx.state(m, nnx.Param)))
    assert len(flat) == 2 + (not tied) + CFG.num_layers * 16
    for path, var in flat:
        axes = var.get_metadata().get("logical_axes")
        assert isinstance(axes, tuple) and len(axes) == var.get_value().ndim, (path, axes)
    assert hasattr(m, "lm_head") != tied


# ---------------------------------------------------------------- errors


def test_bad_input_shapes_are_refused(model):
    with pytest.raises(ValueError, match=r"\[batch, time\].*\(5,\)"):
        model(jnp.zeros((5,), jnp.int32), jnp.ones((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"\(2, 5\) and \(2, 4\)"):
        model(jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 4), jnp.int32))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    path = save_pretrained(model, tmp_path_factory.mktemp("saved"))
    return path, to_hf_state_dict(model)


def test_load_model_round_trips_our_own_export(saved, model):
    path, state = saved
    again = load_model(path)
    assert again.config == CFG
    for name, value in to_hf_state_dict(again).items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)


def test_load_model_file_errors(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="config.json"):
        (tmp_path / "empty").mkdir()
        load_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(tmp_path / "nope")
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text((saved[0] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        load_model(tmp_path / "no_weights")


def _write(tmp_path, tensors):
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_config()))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_load_model_names_an_unexpected_tensor(tmp_path, saved):
    path = _write(tmp_path, {**saved[1], "model.extra_thing.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"model\.extra_thing\.weight"):
        load_model(path)


@pytest.mark.parametrize("name, bad", [
    ("model.layers.1.mlp.up_proj.weight", lambda w: np.zeros((5, 7), np.float32)),
    ("lm_head.weight", lambda w: w[:-1]),
    # A transposed k_proj ([D, K*Dh] instead of [K*Dh, D]) has the right element count.
    ("model.layers.0.self_attn.k_proj.weight", lambda w: w.T),
    ("model.layers.0.self_attn.k_proj.weight", lambda w: np.zeros((5, 7), np.float32)),
], ids=["up_proj", "lm_head", "k_proj_transposed", "k_proj_size"])
def test_load_model_names_a_tensor_of_the_wrong_shape(tmp_path, saved, name, bad):
    wrong = bad(saved[1][name])
    assert wrong.shape != saved[1][name].shape
    with pytest.raises(ValueError, match=re.escape(name) + r".*" + re.escape(str(wrong.shape))):
        load_model(_write(tmp_path, {**saved[1], name: wrong}))


def test_load_model_names_a_missing_tensor(tmp_path, saved):
    bad = {k: v for k, v in saved[1].items() if k != "model.layers.1.self_attn.k_proj.bias"}
    with pytest.raises(ValueError, match=r"missing 1 tensors.*layers\.1\.attn\.k_bias"):
        load_model(_write(tmp_path, bad))


def test_load_model_refuses_bias_tensors_the_config_lacks(tmp_path, saved):
    (tmp_path / "config.json").write_text(json.dumps(ModelConfig.tiny().to_hf_config()))  # no biases
    save_file(saved[1], str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"tensor 'model\.layers\.\d\.\w+\.\w+\.bias'.*attention_bias"):
        load_model(tmp_path)
