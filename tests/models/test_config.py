"""ModelConfig: HF interop and refusals that name the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config

from agentrm_jax.models import ModelConfig
from agentrm_jax.models.config import rope_inverse_frequencies

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def _llama(**kw):
    base = dict(vocab_size=101, hidden_size=48, intermediate_size=70, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=4096)
    base.update(kw)
    return LlamaConfig(**base)


def test_llama3_scaling_read_from_v5_and_legacy_fields():
    v5 = ModelConfig.from_hf_config(_llama(rope_scaling=LLAMA3, rope_theta=500000.0))
    legacy = ModelConfig.from_hf_config({**_llama().to_dict(), "rope_parameters": None, "rope_theta": 500000.0,
                                         "rope_scaling": {**LLAMA3, "rope_type": None, "type": "llama3"}})
    assert v5.rope_scaling is not None and v5.rope_scaling.factor == 8.0
    assert v5 == legacy
    assert v5.rope_theta == 500000.0


def test_qwen2_has_qkv_bias_but_no_output_bias():
    cfg = ModelConfig.from_hf_config(Qwen2Config(vocab_size=101, hidden_size=48, intermediate_size=70,
                                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    assert cfg.model_type == "qwen2" and cfg.qkv_bias and not cfg.o_bias


@pytest.mark.parametrize("hf", [_llama(), _llama(tie_word_embeddings=True), _llama(attention_bias=True, mlp_bias=True)])
def test_num_params_matches_transformers(hf):
    expected = sum(p.numel() for p in LlamaForCausalLM(hf).parameters())
    assert ModelConfig.from_hf_config(hf).num_params() == expected


@pytest.mark.parametrize("scaling", [None, LLAMA3])
def test_rope_frequencies_match_transformers(scaling):
    hf = _llama(rope_scaling=scaling, rope_theta=500000.0) if scaling else _llama()
    expected = LlamaForCausalLM(hf).model.rotary_emb.inv_freq.numpy()
    got = np.asarray(rope_inverse_frequencies(ModelConfig.from_hf_config(hf)), np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("change, field", [
    ({"model_type": "mistral"}, "model_type='mistral'"),
    ({"model_type": "gemma"}, "model_type='gemma'"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_type='linear'"),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type='dynamic'"),
    ({"use_sliding_window": True, "sliding_window": 128}, "use_sliding_window=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "layer_types"),
    ({"num_key_value_heads": 3}, "num_kv_heads=3"),
])
def test_unsupported_fields_are_refused_by_name(change, field):
    with pytest.raises(ValueError) as err:
        ModelConfig.from_hf_config({**_llama().to_dict(), **change})
    assert field in str(err.value)


def test_llama3_scaling_without_its_fields_is_refused():
    with pytest.raises(ValueError, match="lacks 'low_freq_factor'"):
        ModelConfig.from_hf_config({**_llama().to_dict(), "rope_parameters": {"rope_type": "llama3", "factor": 8.0}})


def test_presets_are_consistent():
    smol = ModelConfig.smollm2_135m()
    assert 134e6 < smol.num_params() < 136e6
    assert smol.num_query_groups == 3
    assert ModelConfig.from_hf_config(smol.to_hf_config()) == smol
