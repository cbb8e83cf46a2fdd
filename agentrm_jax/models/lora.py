"""LoRA adapters on the attention and MLP projections (our own, ~80 lines; why not a library: below).

W x becomes W x + (alpha / r) * B (A x) with A [r, in] ~ normal(1/sqrt(in)),
B [*out, r] = 0, so an adapted model starts exactly equal to its base. The
factors are flax's own `nnx.LoRAParam` variables (a Param subtype), attached
next to the weight they adapt, so tools that filter on `nnx.LoRAParam` (tunix,
qwix) find them; `adapted_dense`, which every projection of `llama.py` calls,
applies them. So:

- train adapters only: differentiate w.r.t. `nnx.All(nnx.LoRAParam)` (or
  `nnx.split(model, nnx.LoRAParam, ...)`); the base stays frozen;
- the implicit PRM's reference is the same model with the adapters zeroed
  (`rewards.scoring.reference_state`): no second copy of the base weights;
- `merge_lora` folds the adapters into the base for export.

Why not qwix or another library: our projections are raw [out, in] Params
used through one `dense` function (for the decode layout trick), which a
module-swapping LoRA library cannot intercept; the adapter math is a few lines.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from agentrm_jax.models.dense import dense

if TYPE_CHECKING:  # llama.py imports this module for `adapted_dense`
    from agentrm_jax.models.llama import LlamaForCausalLM

__all__ = ["LORA_TARGETS", "LoRAParam", "adapted_dense", "add_lora", "has_lora", "lora_param_count", "merge_lora"]

LoRAParam = nnx.LoRAParam  # flax's own adapter variable type, under the name our callers use

# name -> (owning block, input logical axis, output logical axes)
LORA_TARGETS = {
    "q_proj": ("attn", "embed", ("heads", "head_dim")),
    "k_proj": ("attn", "embed", ("kv_heads", "head_dim")),
    "v_proj": ("attn", "embed", ("kv_heads", "head_dim")),
    "o_proj": ("attn", None, ("embed",)),  # input is the flattened heads x head_dim
    "gate_proj": ("mlp", "embed", ("mlp",)),
    "up_proj": ("mlp", "embed", ("mlp",)),
    "down_proj": ("mlp", "mlp", ("embed",)),
}


def adapted_dense(module: nnx.Module, name: str, x: jax.Array, w: jax.Array, *, out_dims: int = 1,
                  dtype=None) -> jax.Array:
    """`dense(x, w)` plus the LoRA update scale * B(A x) when `module` carries adapters for `name`.

    Adapters live as `{name}_lora_a` [r, in] and `{name}_lora_b` [*out, r]
    (added by `models.lora.add_lora`); without them this is `dense`.
    """
    y = dense(x, w, out_dims=out_dims)
    a = getattr(module, f"{name}_lora_a", None)
    if a is None:
        return y
    b = getattr(module, f"{name}_lora_b")
    dtype = dtype or y.dtype
    low = dense(x, a[...].astype(dtype))
    return y + module.lora_scale * dense(low, b[...].astype(dtype), out_dims=out_dims)


def _shapes(module: nnx.Module, name: str) -> tuple[tuple[int, ...], int]:
    """(output dims, flattened input width) of one projection weight stored [out..., in]."""
    w = getattr(module, name)[...]
    if name == "o_proj":  # [D, H, Dh]: output D, input H*Dh
        return (w.shape[0],), int(math.prod(w.shape[1:]))
    return tuple(w.shape[:-1]), int(w.shape[-1])


def add_lora(model: LlamaForCausalLM, *, rank: int, alpha: float,
             targets: tuple[str, ...] = tuple(LORA_TARGETS), seed: int = 0) -> LlamaForCausalLM:
    """Attach adapters of `rank` to `targets` in every layer (in place; returns the model).

    Raises ValueError for an unknown target, a non-positive rank, or a model
    that already has adapters.
    """
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise ValueError(f"unknown LoRA targets {unknown}; choose from {sorted(LORA_TARGETS)}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; merge_lora() first to add new ones")
    key = jax.random.key(seed)
    param_dtype = model.embed[...].dtype
    for layer in model.layers:
        for name in targets:
            block_name, in_axis, out_axes = LORA_TARGETS[name]
            block = getattr(layer, block_name)
            out_dims, width = _shapes(block, name)
            key, sub = jax.random.split(key)
            a = jax.random.normal(sub, (rank, width), param_dtype) / math.sqrt(width)
            setattr(block, f"{name}_lora_a", LoRAParam(a, logical_axes=(None, in_axis)))
            setattr(block, f"{name}_lora_b", LoRAParam(jnp.zeros((*out_dims, rank), param_dtype),
                                                       logical_axes=(*out_axes, None)))
            block.lora_scale = float(alpha) / rank
    return model


def has_lora(model: nnx.Module) -> bool:
    return bool(jax.tree.leaves(nnx.state(model, LoRAParam)))


def lora_param_count(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, LoRAParam)))


def merge_lora(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """Fold every adapter into its base weight (W += scale * B A) and remove it (in place; returns the model)."""
    for layer in model.layers:
        for name, (block_name, _, _) in LORA_TARGETS.items():
            block = getattr(layer, block_name)
            a = getattr(block, f"{name}_lora_a", None)
            if a is None:
                continue
            b = getattr(block, f"{name}_lora_b")
            w = getattr(block, name)
            base = w[...]
            delta = jnp.einsum("...r,ri->...i", b[...].astype(jnp.float32), a[...].astype(jnp.float32))
            delta = delta.reshape(base.shape) * block.lora_scale
            w.set_value((base.astype(jnp.float32) + delta).astype(base.dtype))
            delattr(block, f"{name}_lora_a")
            delattr(block, f"{name}_lora_b")
        for block in (layer.attn, layer.mlp):
            if hasattr(block, "lora_scale"):
                del block.lora_scale
    return model
