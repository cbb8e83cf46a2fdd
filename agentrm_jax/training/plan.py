"""`agentrm train --plan`: the per-device memory of a run, worked out before anything is loaded.

    memory_plan(config) -> MemoryPlan (per-device bytes by part, the device's memory, fits)
    format_plan(plan) -> the lines `--plan` prints; plan.to_dict() is its `--json` object

Nothing is read but the backbone's config (config.json or a GGUF header; or `compute.architecture`
on a machine without the weights) and nothing is placed on a device: the model and the optimizer state
are built abstractly (`nnx.eval_shape`, `jax.eval_shape`) and every parameter's shard is worked out on a
`jax.sharding.AbstractMesh` of the config's shape, with the trainer's rules (`models.sharding`).

What each part counts, per device (the most loaded one: the rules split every sharded dimension evenly):
- params: every parameter's shard at float32 (the master weights), trained and frozen;
- reference: the implicit PRM's frozen copy of the initial weights under full fine-tuning (else 0);
- optimizer_state: AdamW's state as optax builds it (two float32 moments per trained parameter, sharded
  like it, plus its step counts);
- gradients: one float32 gradient per trained parameter shard; twice that with grad_accum > 1 (the
  running sum and the micro-batch's);
- scan_gradients: with scan_layers, the trained layers' gradients also exist stacked [L, ...] once;
- gathered_weights: with parameters split (fsdp x tensor > 1), a layer's weights are all-gathered whole
  (compute dtype) for its forward and again for its backward: 2 x one layer's weights beyond the shard
  held, under scan_layers (the gathers stay inside the loop body); unrolled, XLA may gather every layer
  ahead of time, so all layers count (still an under-estimate on XLA:CPU, see docs/BENCHMARKS.md);
- batch: the step's input rows on this device;
- activations: an estimate, from the program itself rather than a hand count. The loss of one
  micro-batch is traced (`jax.make_jaxpr` of `jax.vjp`, on abstract values) at 1 and 2 rows, and the
  residuals the backward pass keeps are summed: R(rows) = A * rows + W, A the per-row activations
  under the configured remat policy, W what does not grow with rows (weight casts, scan's stacked
  weights), which is taken as sharded like the weights. On top comes the working set of one layer's
  backward: its internal residuals without remat (the 2-layer minus the 1-layer trace, I per row),
  recomputed and then differentiated: activations = A * r + W / s + k * I * r, with r the rows per
  device per micro-batch, s the ways parameters are split (fsdp x tensor), k = 2 with remat and 1
  without. Tensor-parallel splitting of activations is not counted (an upper bound when tensor > 1),
  nor XLA's fusion (which saves some of it); docs/BENCHMARKS.md compares the estimate with the
  compiled program's own memory analysis on 8 fake CPU devices.

fits: per_device_bytes <= usable_fraction (0.9) x the device's memory: `compute.device_memory_gb`
(GiB), else `compute.device`'s entry in KNOWN_DEVICES; None when neither is given. On GPU, jax
preallocates 75% of memory unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise (set it to 0.9).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P

from agentrm_jax.models.buckets import bucket_length
from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.sharding import MESH_AXES, ShardingPlan, check_replication, param_shardings
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.model import backbone_options, build_model, resolve_model_path, trainable_filter
from agentrm_jax.training.optimizer import make_optimizer
from agentrm_jax.training.step import step_loss

__all__ = ["KNOWN_ARCHITECTURES", "KNOWN_DEVICES", "USABLE_FRACTION", "MemoryPlan", "format_plan", "memory_plan"]

GIB = 2**30
# Memory per chip in GiB (what nvidia-smi / the TPU docs report, rounded down).
KNOWN_DEVICES = {"H100-80GB": 80, "H200-141GB": 139, "A100-40GB": 40, "A100-80GB": 80, "v5e": 16, "v5p": 95,
                 "v4": 32}
# Share of a device's memory a step may plan to fill: the runtime, XLA's own buffers and fragmentation
# take the rest.
USABLE_FRACTION = 0.9

# Backbone shapes by name, as their transformers config.json gives them, for planning without the weights.
KNOWN_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        max_position_embeddings=131072, tie_word_embeddings=False, bos_token_id=128000,
        eos_token_id=[128001, 128008, 128009], hidden_act="silu"),
    "smollm2-135m": ModelConfig.smollm2_135m().to_hf_config(),
}
_SHAPE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "tie_word_embeddings")
PARTS = ("params", "reference", "optimizer_state", "gradients", "scan_gradients", "gathered_weights", "batch",
         "activations")


@dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of one run, by part (`PARTS`), and whether they fit the named device."""

    config: str
    model: str
    num_params: int
    mesh: str
    rows_per_device: int  # rows of one micro-batch on one device
    length: int  # padded tokens per row (the largest length bucket)
    parts: dict[str, int]
    device: str | None
    device_memory_bytes: int | None
    replicated_fraction: float

    @property
    def per_device_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def usable_bytes(self) -> int | None:
        return None if self.device_memory_bytes is None else int(self.device_memory_bytes * USABLE_FRACTION)

    @property
    def fits(self) -> bool | None:
        return None if self.usable_bytes is None else self.per_device_bytes <= self.usable_bytes

    def to_dict(self) -> dict[str, Any]:
        """The `--json` object."""
        return {"config": self.config, "model": self.model, "num_params": self.num_params, "mesh": self.mesh,
                "rows_per_device": self.rows_per_device, "length": self.length,
                "per_device_bytes": self.per_device_bytes, "parts": dict(self.parts), "device": self.device,
                "device_memory_bytes": self.device_memory_bytes, "usable_fraction": USABLE_FRACTION,
                "usable_bytes": self.usable_bytes, "fits": self.fits,
                "replicated_fraction": round(self.replicated_fraction, 4),
                "activations_are": "an estimate (training.plan: saved residuals + one layer's backward)"}


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def format_plan(plan: MemoryPlan) -> str:
    """The lines `agentrm train --plan` prints."""
    lines = [f"plan: {plan.config}: {plan.model} ({plan.num_params / 1e9:.2f} B parameters) on mesh {plan.mesh}; "
             f"{plan.rows_per_device} row(s) x {plan.length} tokens per device per micro-batch"]
    for name in PARTS:
        note = " (estimate)" if name == "activations" else ""
        lines.append(f"  {name:<16} {_gib(plan.parts[name]):>12}{note}")
    lines.append(f"  {'per device':<16} {_gib(plan.per_device_bytes):>12}")
    if plan.device_memory_bytes is None:
        lines.append("  fits: unknown (name compute.device or compute.device_memory_gb in the config)")
    else:
        lines.append(f"  device {plan.device}: {_gib(plan.device_memory_bytes)}, {USABLE_FRACTION:.0%} usable = "
                     f"{_gib(plan.usable_bytes)}; fits: {'true' if plan.fits else 'false'}")
    return "\n".join(lines)


def model_config_for(config: TrainConfig) -> tuple[ModelConfig, str]:
    """(the backbone's ModelConfig with config.compute applied, its name), from its own config file when
    it is on this machine (checked against compute.architecture when both are given), else from
    compute.architecture. ValueError (one line) when neither is available."""
    arch = config.compute.architecture
    if arch is not None and arch not in KNOWN_ARCHITECTURES:
        raise ValueError(f"TrainConfig.compute.architecture={arch!r} is not one of {', '.join(KNOWN_ARCHITECTURES)}")
    named = ModelConfig.from_hf_config(KNOWN_ARCHITECTURES[arch]) if arch else None
    try:
        path = resolve_model_path(config.model)
    except FileNotFoundError:
        if named is None:
            raise ValueError(f"TrainConfig.model: {config.model} is not on this machine, so --plan cannot read its "
                             f"shape; set compute.architecture to one of {', '.join(KNOWN_ARCHITECTURES)}") from None
        model_config, name = named, arch
    else:
        model_config, name = _read_model_config(path), str(path)
        if named is not None:
            differ = [f for f in _SHAPE_FIELDS if getattr(named, f) != getattr(model_config, f)]
            if differ:
                raise ValueError(f"TrainConfig.compute.architecture={arch!r} does not match {path}: "
                                 + ", ".join(f"{f} {getattr(named, f)} vs {getattr(model_config, f)}" for f in differ))
    return dataclasses.replace(model_config, **backbone_options(config)), name


def _read_model_config(path: Path) -> ModelConfig:
    if path.suffix == ".gguf":
        from agentrm_jax.models.gguf_io import iter_gguf

        return ModelConfig.from_hf_config(iter_gguf(path)[0])  # the header only: tensors are read lazily
    from agentrm_jax.models.loading import read_config_json

    return ModelConfig.from_hf_config(read_config_json(path / "config.json"))


def abstract_mesh(config: TrainConfig) -> AbstractMesh:
    """An AbstractMesh of the config's (data, fsdp, tensor) shape: no devices needed."""
    m = config.mesh
    return AbstractMesh((m.data, m.fsdp, m.tensor), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _shard_bytes(shape, dtype, sharding) -> int:
    return math.prod(sharding.shard_shape(tuple(shape))) * jnp.dtype(dtype).itemsize


def _state_bytes(state, shardings) -> int:
    """Per-device bytes of an abstract nnx.State whose leaves' shardings mirror `shardings`."""
    values = [v for v in jax.tree.leaves(state)]
    placed = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    return sum(_shard_bytes(v.shape, v.dtype, s) for v, s in zip(values, placed, strict=True))


def _abstract_model(config: TrainConfig, model_config: ModelConfig):
    from agentrm_jax.models.llama import LlamaForCausalLM

    compute = "bfloat16" if config.precision == "bf16" else "float32"
    return nnx.eval_shape(lambda: build_model(config, backbone=LlamaForCausalLM(
        model_config, dtype=jnp.dtype(compute), param_dtype=jnp.float32, rngs=nnx.Rngs(0)))[0])


def _abstract_batch(rows: int, length: int) -> dict[str, jax.ShapeDtypeStruct]:
    s = jax.ShapeDtypeStruct
    return {"input_ids": s((rows, length), jnp.int32), "attention_mask": s((rows, length), jnp.bool_),
            "agent_mask": s((rows, length), jnp.bool_), "target_index": s((rows, 1), jnp.int32),
            "targets": s((rows, 1), jnp.float32), "labels": s((rows,), jnp.float32),
            "weights": s((rows,), jnp.float32)}


def residual_bytes(config: TrainConfig, model_config: ModelConfig, rows: int, length: int) -> int:
    """Bytes the backward pass of one (micro-)batch of `rows` x `length` keeps from its forward: the
    residuals of `jax.vjp` of the step's loss over the trained parameters, arguments (weights, batch)
    not counted. Traced on abstract values (nothing is compiled or allocated)."""
    from jax.extend.core import Literal

    model = _abstract_model(config, model_config)
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(config), ...)
    reference = trainable if config.kind == "implicit" and config.finetune != "lora" else None
    batch = _abstract_batch(rows, length)

    def residuals(trainable, frozen, reference, batch):
        count = jnp.float32(rows)
        return jax.vjp(lambda t: step_loss(graphdef, config, t, frozen, reference, batch, count), trainable)

    closed, shapes = jax.make_jaxpr(residuals, return_shape=True)(trainable, frozen, reference, batch)
    jaxpr = closed.jaxpr
    count = len(jax.tree.leaves(shapes[1]))
    inputs = set(jaxpr.invars) | set(jaxpr.constvars)
    seen, total = set(), 0
    for var in jaxpr.outvars[len(jaxpr.outvars) - count:]:
        if isinstance(var, Literal) or var in inputs or var in seen:
            continue
        seen.add(var)
        total += math.prod(var.aval.shape) * jnp.dtype(var.aval.dtype).itemsize
    return total


def memory_plan(config: TrainConfig, *, source: str = "config") -> MemoryPlan:
    """The per-device memory of `config`'s run (see the module docstring); `source` names the config."""
    model_config, name = model_config_for(config)
    mesh = abstract_mesh(config)
    plan = ShardingPlan(mesh)
    model = _abstract_model(config, model_config)
    shardings = param_shardings(model, plan)
    replicated = check_replication(nnx.state(model, nnx.Param), shardings, plan)
    flat_shardings = dict(nnx.to_flat_state(shardings))
    replicated_sharding = NamedSharding(mesh, P())
    _, trainable, frozen = nnx.split(model, trainable_filter(config), ...)
    train_shardings = nnx.map_state(lambda p, v: flat_shardings.get(p, replicated_sharding), trainable)
    frozen_shardings = nnx.map_state(lambda p, v: flat_shardings.get(p, replicated_sharding), frozen)
    trained = _state_bytes(trainable, train_shardings)
    params = trained + _state_bytes(frozen, frozen_shardings)

    tx = make_optimizer(config, 1000)
    opt = jax.eval_shape(tx.init, trainable)
    opt_shardings = optax.tree_map_params(tx, lambda _, s: s, opt, train_shardings,
                                          transform_non_params=lambda _: replicated_sharding,
                                          is_leaf=lambda x: isinstance(x, nnx.Variable))
    optimizer_state = _state_bytes(opt, opt_shardings)

    accum = config.optimizer.grad_accum
    m = config.mesh
    micro_rows = config.data.batch_size * config.data.rows_per_example // accum
    rows = micro_rows // m.batch_shards
    length = bucket_length(config.data.max_length, config.data.min_length_bucket)
    layer_trained = sum(_shard_bytes(v.shape, v.dtype, flat_shardings.get(p, replicated_sharding))
                        for p, v in nnx.to_flat_state(trainable) if "layers" in p)
    # ids (int32) and two bool masks per token; target index, target, label, weight per row
    batch = rows * accum * (length * 6 + 16)

    one, two = (residual_bytes(config, model_config, r, length) for r in (1, 2))
    per_row, fixed = two - one, 2 * one - two
    small = dataclasses.replace(model_config, remat="none", scan_layers=False)
    layer = (residual_bytes(config, dataclasses.replace(small, num_layers=2), 1, length)
             - residual_bytes(config, dataclasses.replace(small, num_layers=1), 1, length))
    split = max(1, math.prod(mesh.shape[a] for a in ("fsdp", "tensor")))
    k = 1 if model_config.remat == "none" else 2
    activations = per_row * rows + fixed // split + k * layer * rows

    compute_size = 2 if config.precision == "bf16" else 4
    layer_params = [(p, v) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param)) if "layers" in p]
    gathered = sum(math.prod(v.shape) * compute_size
                   - _shard_bytes(v.shape, v.dtype, flat_shardings[p]) * compute_size // 4 for p, v in layer_params)
    if model_config.scan_layers:
        gathered //= model_config.num_layers
    gathered *= 2

    parts = {"params": params,
             "reference": trained if config.kind == "implicit" and config.finetune != "lora" else 0,
             "optimizer_state": optimizer_state,
             "gradients": trained * (2 if accum > 1 else 1),
             "scan_gradients": layer_trained if model_config.scan_layers else 0,
             "gathered_weights": gathered,
             "batch": batch, "activations": activations}
    device, memory = _device_memory(config)
    return MemoryPlan(config=source, model=name, num_params=model_config.num_params(), mesh=str(m),
                      rows_per_device=rows, length=length, parts=parts, device=device, device_memory_bytes=memory,
                      replicated_fraction=replicated)


def _device_memory(config: TrainConfig) -> tuple[str | None, int | None]:
    compute = config.compute
    if compute.device is not None and compute.device not in KNOWN_DEVICES:
        raise ValueError(f"TrainConfig.compute.device={compute.device!r} is not one of {', '.join(KNOWN_DEVICES)}; "
                         "give compute.device_memory_gb instead")
    if compute.device_memory_gb is not None:
        return compute.device or f"{compute.device_memory_gb:g} GiB", int(compute.device_memory_gb * GIB)
    if compute.device is not None:
        return compute.device, KNOWN_DEVICES[compute.device] * GIB
    return None, None
