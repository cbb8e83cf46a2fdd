"""GGUF files (llama.cpp) -> a transformers config dict and transformers-named float32 tensors.

After `read_gguf` a GGUF checkpoint looks exactly like a safetensors one, so
`loading.py` converts both with the same table. What this module undoes:
  * quantization: every tensor is dequantized to float32 with `gguf.quants`;
  * layout: ggml lists dimensions innermost-first (`ne[0]` is the row length),
    so a tensor whose ggml shape is [in, out] is the numpy / transformers
    [out, in] matrix; `GGUFReader` already hands out arrays in numpy order and
    every shape is checked against the config before anything is dequantized;
  * RoPE: llama.cpp's converter interleaves the two rotary halves of every q/k
    head; we permute those rows back so the half-split RoPE in `llama.py` applies.
The tokenizer is rebuilt from the same file by `gguf_tokenizer.py`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# ggml tensor name inside block i -> transformers name inside `model.layers.{i}`.
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
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "ffn_gate.bias": "mlp.gate_proj.bias",
    "ffn_up.bias": "mlp.up_proj.bias",
    "ffn_down.bias": "mlp.down_proj.bias",
}
_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_REQUIRED_LAYER = ("attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight",
                   "attn_output.weight", "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight")
# Tokenizer arrays are large (~100k entries) and only the tokenizer conversion reads them.
_SKIPPED_FIELDS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.scores")
# llama.cpp features a transformers LlamaConfig cannot express: (key, value meaning "not used").
_MUST_BE_ABSENT = (
    ("llama.expert_count", 0),  # Mixtral-style MoE is stored as architecture "llama"
    ("llama.attention.sliding_window", 0),
    ("llama.logit_scale", 1.0),
    ("llama.attn_logit_softcapping", 0.0),
    ("llama.final_logit_softcapping", 0.0),
)
_CACHE_MARKER = "agentrm_source.json"  # written last into the staging folder: its presence = complete copy


@dataclasses.dataclass(frozen=True)
class GGUFCheckpoint:
    """A GGUF file in transformers' terms."""

    hf_config: dict[str, Any]  # config.json-style dict for LlamaForCausalLM
    tensors: dict[str, np.ndarray]  # transformers names, [out, in] layout, float32


# ---------------------------------------------------------------- pure helpers

def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's q/k row order -> transformers': per head, interleaved pairs -> two halves.

    weight: [num_heads * head_dim, in] (or a bias [num_heads * head_dim]). Viewed as
    [heads, head_dim / 2, 2, ...], axes 1 and 2 are swapped. Returns a new array.
    """
    rows, rest = weight.shape[0], weight.shape[1:]
    if rows % (2 * num_heads):
        raise ValueError(f"cannot undo the RoPE row order: {rows} rows is not a multiple of 2 * {num_heads} heads")
    return weight.reshape(num_heads, rows // num_heads // 2, 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def permute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """The inverse of `unpermute_rope_rows` (transformers' q/k rows -> llama.cpp's). Same shapes."""
    rows, rest = weight.shape[0], weight.shape[1:]
    return weight.reshape(num_heads, 2, rows // num_heads // 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def _float32_value(value: Any) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-5, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _rope_scaling(meta: dict[str, Any], source: str) -> dict[str, Any] | None:
    """transformers `rope_scaling` from llama.cpp's rope metadata; None for plain RoPE."""
    kind = meta.get("llama.rope.scaling.type")
    factor = meta.get("llama.rope.scaling.factor", meta.get("llama.rope.scale_linear"))
    if kind in (None, "none") and factor in (None, 1.0):
        return None
    if kind in (None, "linear") and factor is not None:
        # exact: transformers' "linear" divides positions by `factor`, as llama.cpp does
        return {"rope_type": "linear", "factor": _float32_value(factor)}
    raise ValueError(f"{source}: llama.rope.scaling.type={kind!r} (factor {factor!r}) is not supported in GGUF "
                     "files; load the model from its HF safetensors directory instead")


def hf_config_from_metadata(meta: dict[str, Any], tensor_names: set[str], source: str = "gguf") -> dict[str, Any]:
    """transformers LlamaConfig dict from GGUF metadata and the file's ggml tensor names.

    Only `general.architecture == "llama"` is accepted; llama.cpp features a
    LlamaConfig cannot express are refused by name.
    """
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{source}: general.architecture={arch!r} is not supported; agentrm_jax reads "
                         "'llama' GGUF files (Llama, Llama-3, SmolLM2)")
    if "rope_freqs.weight" in tensor_names:
        raise ValueError(f"{source}: tensor rope_freqs.weight (llama.cpp's Llama-3.1 RoPE scaling, whose "
                         "parameters the file does not keep) is not supported in GGUF files; load the model from "
                         "its HF safetensors directory instead")
    for key, unused in _MUST_BE_ABSENT:
        if meta.get(key, unused) != unused:
            raise ValueError(f"{source}: {key}={meta[key]!r} is not supported (a Llama model needs {unused!r})")

    def need(key: str) -> Any:
        if key not in meta:
            raise ValueError(f"{source}: metadata field {key} is missing")
        return meta[key]

    hidden = int(need("llama.embedding_length"))
    heads = int(need("llama.attention.head_count"))
    head_dim = int(meta.get("llama.attention.key_length", hidden // heads))
    for key in ("llama.attention.value_length", "llama.rope.dimension_count"):
        if int(meta.get(key, head_dim)) != head_dim:
            raise ValueError(f"{source}: {key}={meta[key]} differs from the head size {head_dim}; "
                             "a Llama model needs them equal")
    vocab = meta.get("llama.vocab_size")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab) if vocab else None,  # filled from token_embd by read_gguf when absent
        "hidden_size": hidden,
        "intermediate_size": int(need("llama.feed_forward_length")),
        "num_hidden_layers": int(need("llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _float32_value(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _float32_value(meta.get("llama.rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(meta, source),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": any(n.endswith((".attn_q.bias", ".attn_k.bias", ".attn_v.bias", ".attn_output.bias"))
                              for n in tensor_names),
        "mlp_bias": any(n.endswith((".ffn_gate.bias", ".ffn_up.bias", ".ffn_down.bias")) for n in tensor_names),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }


def hf_tensor_name(gguf_name: str) -> str | None:
    """transformers name of a llama ggml tensor name (`blk.3.attn_q.weight` ->
    `model.layers.3.self_attn.q_proj.weight`); None when it has none."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{_LAYER_NAMES[parts[2]]}"
    return None


def expected_hf_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """transformers name -> numpy shape ([out, in] for matrices) of every tensor a
    LlamaForCausalLM with this config may have (biases included, lm_head too)."""
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,), "lm_head.weight": (v, d)}
    per_layer = {
        "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
        "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
        "self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.bias": (d,),
        "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d), "mlp.down_proj.weight": (d, f),
        "mlp.gate_proj.bias": (f,), "mlp.up_proj.bias": (f,), "mlp.down_proj.bias": (d,),
    }
    for i in range(config["num_hidden_layers"]):
        shapes.update({f"model.layers.{i}.{k}": s for k, s in per_layer.items()})
    return shapes


def _check_names(names: list[str], num_layers: int, source: str) -> None:
    """Every tensor must be known, and every required one present."""
    unknown = [n for n in names if hf_tensor_name(n) is None]
    if unknown:
        raise ValueError(f"{source}: tensors {unknown} have no transformers counterpart in a llama model")
    required = ["token_embd.weight", "output_norm.weight"]
    required += [f"blk.{i}.{k}" for i in range(num_layers) for k in _REQUIRED_LAYER]
    missing = sorted(set(required) - set(names))
    if missing:
        raise ValueError(f"{source}: llama tensors {missing[:6]}{' ...' if len(missing) > 6 else ''} are missing "
                         f"({len(missing)} in all; llama.block_count={num_layers})")


def _dequantize(tensor, source: str) -> np.ndarray:
    """One `gguf.ReaderTensor` -> a writable float32 array in numpy order (not a view of the file)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    kind = tensor.tensor_type
    if kind in (GGMLQuantizationType.F64, GGMLQuantizationType.I8, GGMLQuantizationType.I16,
                GGMLQuantizationType.I32, GGMLQuantizationType.I64):
        array = np.asarray(tensor.data)  # plain numpy dtypes: the reader already typed them
    else:
        try:
            array = dequantize(tensor.data, kind)
        except NotImplementedError as e:
            raise ValueError(f"{source}: tensor {tensor.name} has type {kind.name}, which gguf "
                             f"{_gguf_version()} cannot dequantize ({e}); upgrade the `gguf` package") from None
    # F32 comes back as a read-only view of the memory-mapped file: copy it so the
    # arrays own their memory (quantized types are already fresh float32 arrays).
    if array.dtype != np.float32 or not array.flags.writeable:
        array = array.astype(np.float32)
    return array


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")


def _metadata(reader) -> dict[str, Any]:
    """Metadata fields as Python values, without the large tokenizer arrays."""
    return {name: field.contents() for name, field in reader.fields.items() if name not in _SKIPPED_FIELDS}


# ---------------------------------------------------------------- reading

_GGUF_MAGIC = b"GGUF"


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` over `path`, or one clear error naming the file and what is wrong with it.

    Checks the magic bytes first (a renamed safetensors or HTML page is "not a GGUF
    file"), and turns the reader's low-level failures on a truncated or damaged file
    (reshape / struct / index errors) into a ValueError that says so.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file (it starts with {head!r}, a GGUF starts with {_GGUF_MAGIC!r}); "
                         "pass a .gguf file from llama.cpp or an HF directory with config.json + *.safetensors")
    try:
        return GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, OSError, OverflowError, UnicodeDecodeError) as e:
        size = path.stat().st_size
        raise ValueError(f"{path}: the GGUF file is truncated or damaged ({size:,} bytes; the reader failed "
                         f"with: {str(e)[:160]}); download or copy it again") from None

def iter_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], Iterator[tuple[str, np.ndarray]]]:
    """(transformers config dict, lazy (name, float32 array) pairs) of a llama GGUF file.

    Every name and shape is checked before this returns; each tensor is dequantized (and its
    RoPE rows reordered) only when the iterator reaches it, so a caller that places tensors
    one by one (`loading.load_model`) never holds more than one dequantized tensor.
    """
    path = Path(path)
    source = str(path)
    reader = open_gguf(path)
    names = [t.name for t in reader.tensors]
    config = hf_config_from_metadata(_metadata(reader), set(names), source=source)
    _check_names(names, config["num_hidden_layers"], source)
    if config["vocab_size"] is None:
        embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
        config["vocab_size"] = int(embed.shape[-1])  # ggml order: [hidden, vocab]
    expected = expected_hf_shapes(config)
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # ggml ne order is innermost-first
        name = hf_tensor_name(t.name)
        if expected.get(name) != shape:
            raise ValueError(f"{source}: tensor {t.name} ({name}) has shape {list(shape)} (ggml ne "
                             f"{[int(n) for n in t.shape]}), expected {list(expected.get(name, ()))} from the "
                             "llama.* metadata")

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for t in reader.tensors:
            name = hf_tensor_name(t.name)
            array = _dequantize(t, source).reshape(expected[name])
            if ".self_attn.q_proj." in name:
                array = unpermute_rope_rows(array, heads)
            elif ".self_attn.k_proj." in name:
                array = unpermute_rope_rows(array, kv_heads)
            yield name, array

    return config, tensors()


def read_gguf(path: str | os.PathLike) -> GGUFCheckpoint:
    """Reads, checks, dequantizes and renames every tensor of a llama GGUF file.

    Returns transformers' config dict and state dict (float32, [out, in]); about
    5 s for SmolLM2-135M, most of it `GGUFReader` parsing the tokenizer arrays.
    Raises ValueError naming the field or tensor for anything a LlamaForCausalLM
    cannot hold; nothing is dequantized before every shape has been checked.
    `iter_gguf` is the same, one tensor at a time.
    """
    config, tensors = iter_gguf(path)
    return GGUFCheckpoint(hf_config=config, tensors=dict(tensors))
