"""GGUF files (llama.cpp) -> a transformers config dict and transformers-named float32 tensors.

After `read_gguf` a GGUF checkpoint looks exactly like a safetensors one, so
`loading.py` converts both with the same table. What this module undoes:
  * quantization: every tensor is dequantized to float32 with `gguf.quants`;
  * layout: ggml lists dimensions innermost-first (`ne[0]` is the row length),
    so a tensor whose ggml shape is [in, out] is the numpy / transformers
    [out, in] matrix; every shape is checked against the config before anything
    is dequantized;
  * RoPE (llama only): llama.cpp's converter interleaves the two rotary halves of
    every q/k head of a "llama" model; we permute those rows back so the
    half-split RoPE in `llama.py` applies. Its "qwen2" converter stores q/k as
    transformers has them (llama.cpp runs qwen2 with NeoX-style, half-split RoPE),
    so a qwen2 file is read as stored.
Two architectures are read: "llama" (Llama, Llama-3, SmolLM2) and "qwen2" (q/k/v
biases, `output.weight` untied when present). The container itself is parsed by
`gguf_file.py` from one file or from split parts; the tokenizer is rebuilt from
the same file by `gguf_tokenizer.py`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from agentrm_jax.models.gguf_file import ByteSource, GGUFFile, TensorInfo, parse_gguf

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
# Qwen2 has q/k/v biases and no other: transformers' Qwen2 layers have exactly these.
_QWEN2_REQUIRED = ("attn_q.bias", "attn_k.bias", "attn_v.bias")
_QWEN2_ABSENT = ("attn_output.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias")
ARCHITECTURES = ("llama", "qwen2")
# Tokenizer arrays are large (~100k entries) and only the tokenizer conversion reads them.
_SKIPPED_FIELDS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.scores")
# llama.cpp features our decoder cannot express: (key after "<arch>.", value meaning "not used").
_MUST_BE_ABSENT = (
    ("expert_count", 0),  # Mixtral-style MoE is stored as architecture "llama"
    ("attention.sliding_window", 0),
    ("logit_scale", 1.0),
    ("attn_logit_softcapping", 0.0),
    ("final_logit_softcapping", 0.0),
)
_CACHE_MARKER = "agentrm_source.json"  # written last into the staging folder: its presence = complete copy


@dataclasses.dataclass(frozen=True)
class GGUFCheckpoint:
    """A GGUF file in transformers' terms."""

    hf_config: dict[str, Any]  # config.json-style dict for LlamaForCausalLM / Qwen2ForCausalLM
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


def _rope_scaling(meta: dict[str, Any], source: str, arch: str = "llama") -> dict[str, Any] | None:
    """transformers `rope_scaling` from llama.cpp's `<arch>.rope.*` metadata; None for plain RoPE."""
    kind = meta.get(f"{arch}.rope.scaling.type")
    factor = meta.get(f"{arch}.rope.scaling.factor", meta.get(f"{arch}.rope.scale_linear"))
    if kind in (None, "none") and factor in (None, 1.0):
        return None
    if kind in (None, "linear") and factor is not None:
        # exact: transformers' "linear" divides positions by `factor`, as llama.cpp does
        return {"rope_type": "linear", "factor": _float32_value(factor)}
    raise ValueError(f"{source}: {arch}.rope.scaling.type={kind!r} (factor {factor!r}) is not supported in GGUF "
                     "files; load the model from its HF safetensors directory instead")


def hf_config_from_metadata(meta: dict[str, Any], tensor_names: set[str], source: str = "gguf") -> dict[str, Any]:
    """transformers LlamaConfig / Qwen2Config dict from GGUF metadata and the file's ggml tensor names.

    `general.architecture` must be "llama" or "qwen2" (its keys are read under that prefix);
    llama.cpp features our decoder cannot express are refused by name.
    """
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{source}: general.architecture={arch!r} is not supported; agentrm_jax reads "
                         "'llama' (Llama, Llama-3, SmolLM2) and 'qwen2' (Qwen2, Qwen2.5) GGUF files")
    if "rope_freqs.weight" in tensor_names:
        raise ValueError(f"{source}: tensor rope_freqs.weight (llama.cpp's Llama-3.1 RoPE scaling, whose "
                         "parameters the file does not keep) is not supported in GGUF files; load the model from "
                         "its HF safetensors directory instead")
    for key, unused in _MUST_BE_ABSENT:
        key = f"{arch}.{key}"
        if meta.get(key, unused) != unused:
            raise ValueError(f"{source}: {key}={meta[key]!r} is not supported (a {arch} model needs {unused!r})")

    def need(key: str) -> Any:
        if f"{arch}.{key}" not in meta:
            raise ValueError(f"{source}: metadata field {arch}.{key} is missing")
        return meta[f"{arch}.{key}"]

    def get(key: str, default: Any) -> Any:
        return meta.get(f"{arch}.{key}", default)

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    head_dim = int(get("attention.key_length", hidden // heads))
    for key in ("attention.value_length", "rope.dimension_count"):
        if int(get(key, head_dim)) != head_dim:
            raise ValueError(f"{source}: {arch}.{key}={get(key, None)} differs from the head size {head_dim}; "
                             f"a {arch} model needs them equal")
    vocab = get("vocab_size", None)
    config = {
        "architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
        "model_type": arch,
        "vocab_size": int(vocab) if vocab else None,  # filled from token_embd by iter_gguf when absent
        "hidden_size": hidden,
        "intermediate_size": int(need("feed_forward_length")),
        "num_hidden_layers": int(need("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _float32_value(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _float32_value(get("rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(meta, source, arch),
        "max_position_embeddings": int(get("context_length", 2048)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }
    if arch == "qwen2":  # Qwen2Config has no bias flags (q/k/v biases are implied) and a window left off
        config["use_sliding_window"] = False
    else:
        config["attention_bias"] = any(n.endswith((".attn_q.bias", ".attn_k.bias", ".attn_v.bias",
                                                   ".attn_output.bias")) for n in tensor_names)
        config["mlp_bias"] = any(n.endswith((".ffn_gate.bias", ".ffn_up.bias", ".ffn_down.bias"))
                                 for n in tensor_names)
    return config


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


def _check_names(names: list[str], num_layers: int, source: str, arch: str = "llama") -> None:
    """Every tensor must be known, every required one present (qwen2: q/k/v biases, and no other bias)."""
    unknown = [n for n in names if hf_tensor_name(n) is None]
    if unknown:
        raise ValueError(f"{source}: tensors {unknown} have no transformers counterpart in a {arch} model")
    per_layer = _REQUIRED_LAYER + (_QWEN2_REQUIRED if arch == "qwen2" else ())
    required = ["token_embd.weight", "output_norm.weight"]
    required += [f"blk.{i}.{k}" for i in range(num_layers) for k in per_layer]
    missing = sorted(set(required) - set(names))
    if missing:
        raise ValueError(f"{source}: {arch} tensors {missing[:6]}{' ...' if len(missing) > 6 else ''} are missing "
                         f"({len(missing)} in all; {arch}.block_count={num_layers})")
    if arch == "qwen2":
        extra = [n for n in names if n.split(".", 2)[-1] in _QWEN2_ABSENT]
        if extra:
            raise ValueError(f"{source}: tensors {extra[:4]} are biases a qwen2 model does not have (Qwen2 has "
                             "q/k/v biases only)")


def _dequantize(file: GGUFFile, tensor: TensorInfo, source: str) -> np.ndarray:
    """One tensor's bytes -> a writable float32 array in numpy order (never a view of the file)."""
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import dequantize, quant_shape_to_byte_shape

    raw = file.tensor_bytes(tensor)
    kind = tensor.tensor_type
    plain = {QT.F32: "<f4", QT.F64: "<f8", QT.I8: "i1", QT.I16: "<i2", QT.I32: "<i4", QT.I64: "<i8"}
    if kind in plain:
        array = raw.view(plain[kind]).reshape(tensor.shape)
    else:
        try:
            array = dequantize(raw.reshape(quant_shape_to_byte_shape(tensor.shape, kind)), kind)
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


def _metadata(file: GGUFFile) -> dict[str, Any]:
    """Metadata fields as Python values, without the large tokenizer arrays."""
    return {name: value for name, value in file.fields.items() if name not in _SKIPPED_FIELDS}


# ---------------------------------------------------------------- reading

def open_gguf(path: str | os.PathLike | ByteSource) -> GGUFFile:
    """The parsed header of a GGUF file (or of a `ByteSource`: split parts read in order), or one clear
    error naming the file: missing, "not a GGUF file" (its first bytes), or "truncated or damaged"."""
    if isinstance(path, ByteSource):
        return parse_gguf(path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    return parse_gguf(ByteSource([path]))


def iter_gguf(path: str | os.PathLike | ByteSource) -> tuple[dict[str, Any], Iterator[tuple[str, np.ndarray]]]:
    """(transformers config dict, lazy (name, float32 array) pairs) of a llama / qwen2 GGUF file
    (or `ByteSource`).

    Every name and shape is checked before this returns; each tensor is dequantized (and its
    RoPE rows reordered) only when the iterator reaches it, so a caller that places tensors
    one by one (`loading.load_model`) never holds more than one dequantized tensor.
    """
    reader = open_gguf(path)
    source = reader.source.name
    names = [t.name for t in reader.tensors]
    config = hf_config_from_metadata(_metadata(reader), set(names), source=source)
    arch = config["model_type"]
    _check_names(names, config["num_hidden_layers"], source, arch)
    if config["vocab_size"] is None:
        embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
        config["vocab_size"] = int(embed.ne[-1])  # ggml order: [hidden, vocab]
    expected = expected_hf_shapes(config)
    for t in reader.tensors:
        name = hf_tensor_name(t.name)
        if expected.get(name) != t.shape:
            raise ValueError(f"{source}: tensor {t.name} ({name}) has shape {list(t.shape)} (ggml ne "
                             f"{list(t.ne)}), expected {list(expected.get(name, ()))} from the "
                             f"{arch}.* metadata")

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for t in reader.tensors:
            name = hf_tensor_name(t.name)
            array = _dequantize(reader, t, source).reshape(expected[name])
            if arch == "llama" and ".self_attn.q_proj." in name:
                array = unpermute_rope_rows(array, heads)
            elif arch == "llama" and ".self_attn.k_proj." in name:
                array = unpermute_rope_rows(array, kv_heads)
            yield name, array

    return config, tensors()


def read_gguf(path: str | os.PathLike | ByteSource) -> GGUFCheckpoint:
    """Reads, checks, dequantizes and renames every tensor of a llama / qwen2 GGUF file.

    Returns transformers' config dict and state dict (float32, [out, in]); about
    2 s for SmolLM2-135M. Raises ValueError naming the field or tensor for anything
    our decoder cannot hold; nothing is dequantized before every shape has been checked.
    `iter_gguf` is the same, one tensor at a time.
    """
    config, tensors = iter_gguf(path)
    return GGUFCheckpoint(hf_config=config, tensors=dict(tensors))
