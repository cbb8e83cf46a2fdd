"""LoRA adapters (models/lora.py): flax's own LoRAParam, an exact start, merge, and the errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import init_model
from agentrm_jax.models.lora import LORA_TARGETS, add_lora, has_lora, lora_param_count, merge_lora


@pytest.fixture
def tiny():
    return init_model(ModelConfig.tiny(vocab_size=61, max_position_embeddings=64), seed=3)


def _logits(model, ids):
    return np.asarray(model(ids, jnp.ones_like(ids)))


def test_adapters_are_flax_lora_params_that_tools_find(tiny):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 61, (2, 9)), jnp.int32)
    before = _logits(tiny, ids)
    add_lora(tiny, rank=2, alpha=4.0, targets=("q_proj", "down_proj"))
    found = nnx.state(tiny, nnx.LoRAParam)  # what tunix / qwix filter on
    names = {".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(found)}
    layers = tiny.config.num_layers
    assert len(names) == 2 * 2 * layers and all(n.endswith(("_lora_a", "_lora_b")) for n in names)
    assert has_lora(tiny) and lora_param_count(tiny) == sum(x.size for x in jax.tree.leaves(found))
    np.testing.assert_array_equal(_logits(tiny, ids), before)  # B = 0: the adapted model starts as its base


def test_merge_folds_trained_adapters_into_the_base(tiny):
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 61, (2, 7)), jnp.int32)
    add_lora(tiny, rank=3, alpha=6.0)
    for path, var in nnx.to_flat_state(nnx.state(tiny, nnx.LoRAParam)):
        if str(path[-1]).endswith("_lora_b"):  # as if trained: a non-zero update
            var.set_value(jnp.full(var.shape, 0.01, var.dtype))
    adapted = _logits(tiny, ids)
    merge_lora(tiny)
    assert not has_lora(tiny)
    np.testing.assert_allclose(_logits(tiny, ids), adapted, atol=1e-5)


def test_bad_requests_are_refused(tiny):
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        add_lora(tiny, rank=2, alpha=1.0, targets=("nope",))
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        add_lora(tiny, rank=0, alpha=1.0)
    add_lora(tiny, rank=1, alpha=1.0, targets=tuple(LORA_TARGETS))
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(tiny, rank=1, alpha=1.0)
