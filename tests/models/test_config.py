"""ModelConfig: reading transformers configs, the round trip back, and refusals that name the field.

transformers is the oracle for parameter counts and RoPE frequencies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from agentrm_jax.models import Llama3RopeScaling, ModelConfig
from agentrm_jax.models.config import rope_inverse_frequencies

# original_max_position_embeddings=64 with theta 5e5 and head_dim 14 puts the 7 frequencies in all three
# llama3 regimes (kept, smoothed, divided by factor); see test_llama3_frequencies_cover_all_three_regimes.
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
THETA = 500000.0


def _llama(**kw) -> LlamaConfig:
    base = dict(vocab_size=101, hidden_size=52, intermediate_size=74, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=14, max_position_embeddings=4096, rms_norm_eps=1e-5,
                bos_token_id=1, eos_token_id=2, pad_token_id=2)
    base.update(kw)
    return LlamaConfig(**base)


def _qwen2(**kw) -> Qwen2Config:
    base = dict(vocab_size=101, hidden_size=60, intermediate_size=74, num_hidden_layers=2, num_attention_heads=6,
                num_key_value_heads=2, max_position_embeddings=4096, rope_theta=1000000.0)
    base.update(kw)
    return Qwen2Config(**base)


def _llama_dict(**change) -> dict:
    """A config.json dict as older transformers wrote it (no rope_parameters)."""
    d = _llama().to_dict()
    d.pop("rope_parameters", None)
    d["rope_theta"] = 10000.0
    d.update(change)
    return d


# ---------------------------------------------------------------- reading HF configs


def test_llama_fields_are_read():
    cfg = ModelConfig.from_hf_config(_llama(eos_token_id=[2, 7]))
    assert (cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == ("llama", 101, 52, 74)
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 4, 2, 14)
    assert cfg.rms_norm_eps == 1e-5 and cfg.max_position_embeddings == 4096
    assert (cfg.bos_token_id, cfg.eos_token_ids, cfg.pad_token_id) == (1, (2, 7), 2)
    assert cfg.rope_scaling is None and cfg.rope_theta == 10000.0
    assert not (cfg.qkv_bias or cfg.o_bias or cfg.mlp_bias or cfg.tie_word_embeddings)
    assert cfg.num_query_groups == 2


def test_head_dim_defaults_to_hidden_over_heads():
    d = _llama_dict(hidden_size=56)
    del d["head_dim"]
    assert ModelConfig.from_hf_config(d).head_dim == 56 // 4


def test_llama3_scaling_from_v5_rope_parameters():
    hf = _llama(rope_parameters={**LLAMA3, "rope_theta": THETA})
    assert hf.to_dict()["rope_parameters"]["rope_type"] == "llama3"  # really the v5 field
    cfg = ModelConfig.from_hf_config(hf)
    assert cfg.rope_theta == THETA
    assert cfg.rope_scaling == Llama3RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                                 original_max_position_embeddings=64)


@pytest.mark.parametrize("key", ["rope_type", "type"])  # v4.4x wrote "rope_type", older files "type"
def test_llama3_scaling_from_legacy_rope_scaling_dict(key):
    scaling = {k: v for k, v in LLAMA3.items() if k != "rope_type"} | {key: "llama3"}
    legacy = ModelConfig.from_hf_config(_llama_dict(rope_scaling=scaling, rope_theta=THETA))
    v5 = ModelConfig.from_hf_config(_llama(rope_parameters={**LLAMA3, "rope_theta": THETA}))
    assert legacy.rope_scaling is not None and legacy.rope_theta == THETA
    assert legacy == v5


def test_qwen2_has_qkv_bias_but_no_output_bias():
    cfg = ModelConfig.from_hf_config(_qwen2())
    assert cfg.model_type == "qwen2"
    assert cfg.qkv_bias and not cfg.o_bias and not cfg.mlp_bias
    assert cfg.rope_theta == 1000000.0 and cfg.head_dim == 10


def test_qwen2_default_sliding_window_value_is_not_a_refusal():
    # Qwen2 configs carry sliding_window=4096 with use_sliding_window=False: full attention.
    cfg = ModelConfig.from_hf_config(_qwen2(sliding_window=4096, use_sliding_window=False))
    assert cfg.model_type == "qwen2"


def test_llama_attention_bias_sets_qkv_and_output_bias():
    cfg = ModelConfig.from_hf_config(_llama(attention_bias=True, mlp_bias=True))
    assert cfg.qkv_bias and cfg.o_bias and cfg.mlp_bias


def test_tied_embeddings_are_read():
    assert ModelConfig.from_hf_config(_llama(tie_word_embeddings=True)).tie_word_embeddings
    assert not ModelConfig.from_hf_config(_llama(tie_word_embeddings=False)).tie_word_embeddings


@pytest.mark.parametrize("hf", [
    _llama(),
    _llama(rope_parameters={**LLAMA3, "rope_theta": THETA}),
    _llama(tie_word_embeddings=True, num_key_value_heads=1),
    _llama(attention_bias=True, mlp_bias=True, eos_token_id=[2, 5]),
    _qwen2(),
    _qwen2(tie_word_embeddings=True),
], ids=["llama", "llama3", "tied_mqa", "bias_multi_eos", "qwen2", "qwen2_tied"])
def test_to_hf_config_round_trips(hf):
    cfg = ModelConfig.from_hf_config(hf)
    assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg
    # ...and transformers reads our dict the same way.
    cls = LlamaConfig if cfg.model_type == "llama" else Qwen2Config
    out = cfg.to_hf_config()
    del out["model_type"]
    assert ModelConfig.from_hf_config(cls(**out)) == cfg


def test_presets():
    smol = ModelConfig.smollm2_135m()
    assert smol.num_query_groups == 3 and smol.tie_word_embeddings
    assert ModelConfig.from_hf_config(smol.to_hf_config()) == smol
    tiny = ModelConfig.tiny()
    assert ModelConfig.from_hf_config(tiny.to_hf_config()) == tiny
    assert ModelConfig.tiny(num_layers=3).num_layers == 3


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("change, expected", [
    ({"model_type": "mistral"}, ["model_type", "'mistral'"]),
    ({"model_type": "gemma"}, ["model_type", "'gemma'"]),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, ["rope_scaling", "rope_type", "'yarn'"]),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, ["rope_scaling", "rope_type", "'linear'"]),
    ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}},
     ["rope_parameters", "rope_type", "'dynamic'"]),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     ["rope_parameters", "rope_type", "'yarn'"]),
    ({"use_sliding_window": True, "sliding_window": 128}, ["use_sliding_window", "True"]),
    ({"hidden_act": "gelu"}, ["hidden_act", "'gelu'"]),
    ({"layer_types": ["sliding_attention", "full_attention"]}, ["layer_types", "sliding_attention"]),
    ({"num_key_value_heads": 3}, ["num_heads=4", "num_kv_heads=3"]),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, ["rope_scaling", "low_freq_factor"]),
])
def test_unsupported_llama_fields_are_refused_by_name_and_value(change, expected):
    with pytest.raises(ValueError) as err:
        ModelConfig.from_hf_config(_llama_dict(**change))
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def test_qwen2_sliding_window_is_refused_by_name():
    with pytest.raises(ValueError, match="use_sliding_window=True"):
        ModelConfig.from_hf_config(_qwen2(use_sliding_window=True, sliding_window=128))


def test_invalid_dataclass_values_are_refused():
    with pytest.raises(ValueError, match="num_heads=6 must be a multiple of num_kv_heads=4"):
        ModelConfig.tiny(num_heads=6, num_kv_heads=4)
    with pytest.raises(ValueError, match="head_dim=9"):
        ModelConfig.tiny(head_dim=9)
    with pytest.raises(ValueError, match="hidden_size"):
        ModelConfig.tiny(hidden_size=0)
    with pytest.raises(ValueError, match="model_type='gemma'"):
        ModelConfig.tiny(model_type="gemma")
    with pytest.raises(ValueError, match="high_freq_factor"):
        Llama3RopeScaling(factor=8.0, low_freq_factor=4.0, high_freq_factor=1.0, original_max_position_embeddings=64)


# ---------------------------------------------------------------- against transformers


def _torch_param_count(model_cls, hf) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = model_cls(hf)
    return sum(p.numel() for p in model.parameters())  # a tied weight is counted once


@pytest.mark.parametrize("model_cls, hf", [
    (LlamaForCausalLM, _llama()),
    (LlamaForCausalLM, _llama(tie_word_embeddings=True)),
    (LlamaForCausalLM, _llama(attention_bias=True, mlp_bias=True, num_key_value_heads=1)),
    (Qwen2ForCausalLM, _qwen2()),
    (Qwen2ForCausalLM, _qwen2(tie_word_embeddings=True)),
    (LlamaForCausalLM, LlamaConfig(**{k: v for k, v in ModelConfig.smollm2_135m().to_hf_config().items()
                                      if k != "model_type"})),
], ids=["llama", "llama_tied", "llama_bias_mqa", "qwen2", "qwen2_tied", "smollm2_135m"])
def test_num_params_matches_transformers(model_cls, hf):
    assert ModelConfig.from_hf_config(hf).num_params() == _torch_param_count(model_cls, hf)


def _torch_inv_freq(hf) -> np.ndarray:
    return LlamaForCausalLM(hf).model.rotary_emb.inv_freq.numpy()


@pytest.mark.parametrize("hf", [
    _llama(),
    _llama(rope_parameters={"rope_type": "default", "rope_theta": 123456.0}, head_dim=16),
    _llama(rope_parameters={**LLAMA3, "rope_theta": THETA}),
    _llama(rope_parameters={**LLAMA3, "rope_theta": 10000.0, "factor": 32.0, "high_freq_factor": 2.5},
           head_dim=20),
], ids=["default", "default_theta", "llama3", "llama3_other"])
def test_rope_frequencies_match_transformers(hf):
    expected = _torch_inv_freq(hf)
    got = np.asarray(rope_inverse_frequencies(ModelConfig.from_hf_config(hf)), np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=0)


def test_llama3_frequencies_cover_all_three_regimes():
    """Guards the parity fixtures: all of llama3's branches must be exercised, not just one."""
    plain = np.asarray(rope_inverse_frequencies(ModelConfig.from_hf_config(_llama(rope_theta=THETA))))
    scaled = np.asarray(rope_inverse_frequencies(
        ModelConfig.from_hf_config(_llama(rope_parameters={**LLAMA3, "rope_theta": THETA}))))
    ratio = plain / scaled
    assert np.isclose(ratio, 1.0).any()  # high frequencies kept
    assert np.isclose(ratio, LLAMA3["factor"]).any()  # low frequencies divided by factor
    assert ((ratio > 1.01) & (ratio < LLAMA3["factor"] - 0.01)).any()  # smoothed band


@pytest.mark.parametrize("kwargs, match", [
    (dict(model_type="qwen2"), "qwen2 has q/k/v biases only"),
    (dict(model_type="qwen2", qkv_bias=True, o_bias=True), "qwen2 has q/k/v biases only"),
    (dict(qkv_bias=True), "attention_bias covers q, k, v and o"),
])
def test_bias_layouts_that_hf_cannot_express_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.tiny(**kwargs)
