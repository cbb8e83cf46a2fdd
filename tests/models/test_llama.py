"""The NNX decoder on its own: padding, caching, dtypes, metadata, and errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models import KVCache, ModelConfig, init_model, load_model, save_pretrained

CFG = ModelConfig.tiny(max_position_embeddings=256)


@pytest.fixture(scope="module")
def model():
    return init_model(CFG, seed=3)


def _ids(b, t, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(3, CFG.vocab_size, size=(b, t)), jnp.int32)


def test_left_and_right_padding_do_not_change_real_logits(model):
    ids = _ids(2, 24)
    ones = jnp.ones_like(ids)
    plain = np.asarray(model(ids, ones))
    pad = jnp.full((2, 7), 2, jnp.int32)
    left = np.asarray(model(jnp.concatenate([pad, ids], 1), jnp.concatenate([jnp.zeros_like(pad), ones], 1)))
    right = np.asarray(model(jnp.concatenate([ids, pad], 1), jnp.concatenate([ones, jnp.zeros_like(pad)], 1)))
    np.testing.assert_allclose(left[:, 7:], plain, atol=1e-5)
    np.testing.assert_allclose(right[:, :24], plain, atol=1e-5)


def test_rows_do_not_depend_on_batch_composition(model):
    ids = _ids(4, 16)
    ones = jnp.ones_like(ids)
    together = np.asarray(model(ids, ones))
    alone = np.asarray(model(ids[2:3], ones[2:3]))
    np.testing.assert_allclose(together[2:3], alone, atol=1e-5)


def test_incremental_decoding_through_the_cache_matches_full_forward(model):
    ids = _ids(2, 20, seed=1)
    mask = jnp.ones_like(ids).at[0, :5].set(0)  # row 0 left-padded
    full = np.asarray(model(ids, mask))
    cache = KVCache.empty(CFG, 2, 24)
    logits, cache = model(ids[:, :12], mask[:, :12], cache=cache)
    steps = [np.asarray(logits)]
    for t in range(12, 20):
        logits, cache = model(ids[:, t:t + 1], mask[:, t:t + 1], cache=cache)
        steps.append(np.asarray(logits))
    got = np.concatenate(steps, axis=1)
    real = np.asarray(mask).astype(bool)
    assert np.abs(got - full)[real].max() <= 1e-5
    assert int(cache.index) == 20


def test_cache_pad_to_and_repeat(model):
    cache = KVCache.empty(CFG, 2, 8)
    _, cache = model(_ids(2, 8), jnp.ones((2, 8), jnp.int32), cache=cache)
    longer = cache.pad_to(12)
    assert longer.length == 12 and not bool(longer.mask[:, 8:].any())
    np.testing.assert_array_equal(longer.keys[0][:, :8], cache.keys[0])
    rep = cache.repeat(3)
    assert rep.keys[1].shape[0] == 6
    np.testing.assert_array_equal(rep.values[1][3], cache.values[1][1])
    with pytest.raises(ValueError, match="shrink"):
        cache.pad_to(4)


def test_fully_padded_row_is_finite(model):
    ids = _ids(2, 8)
    mask = jnp.ones_like(ids).at[1].set(0)
    assert np.isfinite(np.asarray(model(ids, mask))).all()


def test_bf16_compute_with_f32_params_runs_close_to_f32():
    f32 = init_model(CFG, seed=4)
    bf16 = init_model(CFG, seed=4, dtype=jnp.bfloat16)
    assert bf16.layers[0].mlp.gate_proj[...].dtype == jnp.float32
    ids = _ids(2, 32)
    a = np.asarray(f32(ids, jnp.ones_like(ids)))
    b = np.asarray(bf16(ids, jnp.ones_like(ids)))
    assert b.dtype == np.float32 and np.isfinite(b).all()
    assert np.abs(a - b).max() < 0.05


def test_every_parameter_has_logical_axes(model):
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        axes = var.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == var.get_value().ndim, path


def test_bad_input_shapes_are_refused(model):
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        model(jnp.zeros((5,), jnp.int32), jnp.ones((5,), jnp.int32))
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        model(jnp.zeros((2, 5), jnp.int32), jnp.ones((2, 4), jnp.int32))


def test_load_errors_name_the_problem(tmp_path, model):
    with pytest.raises(FileNotFoundError, match="config.json"):
        (tmp_path / "empty").mkdir()
        load_model(tmp_path / "empty")
    save_pretrained(model, tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").rename(tmp_path / "ok" / "weights.bin")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        load_model(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model(tmp_path / "nope")


def test_load_errors_name_the_tensor(tmp_path, model):
    from safetensors.numpy import save_file

    from agentrm_jax.models import to_hf_state_dict

    good = to_hf_state_dict(model)
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_hf_config()))
    save_file({**good, "model.extra_thing.weight": np.zeros(3, np.float32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="model.extra_thing.weight"):
        load_model(tmp_path)
    bad = dict(good)
    bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((5, 7), np.float32)
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="model.layers.1.mlp.up_proj.weight"):
        load_model(tmp_path)
    del bad["model.layers.1.mlp.up_proj.weight"]
    save_file(bad, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing 1 tensors"):
        load_model(tmp_path)
