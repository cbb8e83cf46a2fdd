"""GGUF files (llama.cpp) -> a transformers config dict and transformers-named float32 tensors.

After `read_gguf` a GGUF checkpoint looks exactly like a safetensors one, so
`loading.py` converts both with the same table. What this module undoes:
  * quantization: every tensor is dequantized to float32 with `gguf.quants`;
  * layout: ggml lists dimensions innermost-first; the reader's numpy arrays are
    already [out, in], transformers' layout;
  * RoPE: llama.cpp's converter interleaves the two rotary halves of every q/k
    head; we permute those rows back so the half-split RoPE in `llama.py` applies.
It also turns the file's tokenizer into a transformers tokenizer, once, and caches it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclasses.dataclass(frozen=True)
class GGUFCheckpoint:
    """A GGUF file in transformers' terms."""

    hf_config: dict[str, Any]  # config.json-style dict (model_type "llama")
    tensors: dict[str, np.ndarray]  # transformers names, [out, in] layout, float32


def _fields(reader) -> dict[str, Any]:
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name.rsplit(".", 1)[-1] in ("tokens", "merges", "token_type",
                                                                                  "scores"):
            continue  # large arrays, only the tokenizer conversion needs them
        out[name] = field.contents()
    return out


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undoes llama.cpp's q/k row order: per head, interleaved pairs -> two halves.

    weight [num_heads * head_dim, ...] (or a bias [num_heads * head_dim]).
    """
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (weight.reshape(num_heads, rows // num_heads // 2, 2, *rest)
            .swapaxes(1, 2).reshape(weight.shape))


def permute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The inverse of `unpermute_rope_rows` (what llama.cpp's converter does)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (weight.reshape(num_heads, 2, rows // num_heads // 2, *rest)
            .swapaxes(1, 2).reshape(weight.shape))


def hf_config_from_metadata(meta: dict[str, Any], has_output: bool, source: str = "gguf") -> dict[str, Any]:
    """transformers config dict from GGUF metadata (llama architecture only)."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{source}: general.architecture={arch!r} is not supported; agentrm_jax reads "
                         "'llama' GGUF files (Llama, Llama-3, SmolLM2)")
    scaling = meta.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"{source}: llama.rope.scaling.type={scaling!r} is not supported in GGUF files; "
                         "load the model from its HF safetensors directory instead")

    def need(key):
        if key not in meta:
            raise ValueError(f"{source}: metadata field {key} is missing")
        return meta[key]

    hidden = int(need("llama.embedding_length"))
    heads = int(need("llama.attention.head_count"))
    return {
        "model_type": "llama",
        "vocab_size": int(meta.get("llama.vocab_size") or 0) or None,
        "hidden_size": hidden,
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(meta.get("llama.attention.key_length", hidden // heads)),
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "tie_word_embeddings": not has_output,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }


def hf_tensor_name(gguf_name: str, source: str = "gguf") -> str:
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    raise ValueError(f"{source}: tensor {gguf_name!r} has no transformers counterpart in a llama model")


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
    """Reads, dequantizes and renames every tensor of a llama GGUF file (about 5 s for SmolLM2-135M)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    reader = GGUFReader(str(path))
    meta = _fields(reader)
    names = {t.name for t in reader.tensors}
    config = hf_config_from_metadata(meta, "output.weight" in names, source=str(path))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    tensors = {}
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            raise ValueError(f"{path}: tensor rope_freqs.weight (llama.cpp's Llama-3 RoPE scaling) is not "
                             "supported in GGUF files; load the model from its HF safetensors directory")
        name = hf_tensor_name(t.name, source=str(path))
        array = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if ".q_proj." in name:
            array = unpermute_rope_rows(array, heads)
        elif ".k_proj." in name:
            array = unpermute_rope_rows(array, kv_heads)
        tensors[name] = array
    if config["vocab_size"] is None:
        config["vocab_size"] = int(tensors["model.embed_tokens.weight"].shape[0])
    return GGUFCheckpoint(hf_config=config, tensors=tensors)


# ---------------------------------------------------------------- tokenizer

def default_cache_dir() -> Path:
    return Path(os.environ.get("AGENTRM_CACHE") or Path.home() / ".cache" / "agentrm_jax")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_tokenizer(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
    """transformers tokenizer of a GGUF file.

    Converting it from the GGUF takes ~20 s, so the result is saved under
    `<cache_dir>/tokenizers/<sha256[:16]>` (default cache dir: $AGENTRM_CACHE or
    ~/.cache/agentrm_jax) and later calls load that copy. The copy is written to
    a temporary folder and renamed into place, so a killed process never leaves
    a half-written cache.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    target = Path(cache_dir or default_cache_dir()) / "tokenizers" / file_sha256(path)[:16]
    if not (target / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        try:
            tokenizer.save_pretrained(str(staging))
            (staging / "agentrm_source.json").write_text(json.dumps({"gguf": str(path)}))
            try:
                os.replace(staging, target)
            except OSError:  # another process won the race; its copy is as good as ours
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
