"""Parity with transformers+torch on tiny random checkpoints saved with `save_pretrained`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

import jax.numpy as jnp

from agentrm_jax.models import ModelConfig, load_model, save_pretrained, to_hf_state_dict

VOCAB = 211
LENGTH = 500  # long enough that a RoPE error shows up

CASES = {
    "llama3_gqa": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=64, intermediate_size=74, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
        rope_theta=500000.0, max_position_embeddings=4096,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "qwen2_bias": (Qwen2ForCausalLM, Qwen2Config, dict(
        hidden_size=60, intermediate_size=74, num_attention_heads=6, num_key_value_heads=2,
        max_position_embeddings=4096)),
    "llama_tied_mqa": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=48, intermediate_size=70, num_attention_heads=4, num_key_value_heads=1,
        tie_word_embeddings=True, max_position_embeddings=4096)),
    "llama_bias_mha": (LlamaForCausalLM, LlamaConfig, dict(
        hidden_size=48, intermediate_size=70, num_attention_heads=4, num_key_value_heads=4,
        attention_bias=True, mlp_bias=True, max_position_embeddings=4096)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    model_cls, config_cls, kw = CASES[request.param]
    torch.manual_seed(0)
    ref = model_cls(config_cls(vocab_size=VOCAB, num_hidden_layers=2, **kw)).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(path)
    return request.param, ref, load_model(path), path


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, LENGTH), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :37] = 0  # left-padded row
    mask[2, -53:] = 0  # right-padded row
    return ids, mask


def test_weights_are_equal_after_loading(pair):
    _, ref, ours, _ = pair
    theirs = {k: v.numpy() for k, v in ref.state_dict().items()}
    mine = to_hf_state_dict(ours)
    tied = ours.config.tie_word_embeddings
    assert set(mine) == set(theirs) - ({"lm_head.weight"} if tied else set())
    for name, value in mine.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)


def test_logits_match_transformers_on_padded_batch(pair):
    _, ref, ours, _ = pair
    ids, mask = _batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    real = mask.numpy().astype(bool)
    assert np.abs(got - expected)[real].max() <= 1e-4


def test_config_round_trips_through_hf(pair):
    _, ref, ours, _ = pair
    assert ModelConfig.from_hf_config(ref.config) == ours.config
    assert ModelConfig.from_hf_config(ours.config.to_hf_config()) == ours.config


def test_export_loads_in_transformers_with_equal_logits(pair, tmp_path):
    _, _, ours, _ = pair
    save_pretrained(ours, tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids, mask = _batch()
    with torch.no_grad():
        theirs = back(input_ids=ids[:, :64], attention_mask=mask[:, :64]).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids[:, :64].numpy()), jnp.asarray(mask[:, :64].numpy())))
    real = mask[:, :64].numpy().astype(bool)
    assert np.abs(got - theirs)[real].max() <= 1e-4
    assert to_hf_state_dict(load_model(tmp_path)).keys() == to_hf_state_dict(ours).keys()


def test_sharded_and_bf16_checkpoints_load(tmp_path):
    torch.manual_seed(2)
    ref = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=70,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    ids = torch.randint(0, VOCAB, (2, 40))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits.numpy()
    sharded = load_model(tmp_path / "sharded")
    got = np.asarray(sharded(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    assert np.abs(got - expected).max() <= 1e-4

    ref.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    half = load_model(tmp_path / "bf16", dtype="bfloat16")
    assert half.embed[...].dtype == jnp.bfloat16
    got16 = np.asarray(half(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    assert np.isfinite(got16).all()
    assert np.mean(got16.argmax(-1) == expected.argmax(-1)) >= 0.9
