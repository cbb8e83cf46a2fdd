"""The model a run trains: the backbone (+ LoRA) (+ value head) and the filter of its trainable parameters.

    build_model(config, mesh=...) -> (model, trainable filter)
    trainable_filter(config) -> the nnx filter of what config.finetune trains
    backbone_options(config) -> the ModelConfig fields `config.compute` sets (remat, scan_layers, attention_impl)
    resolve_model_path(config.model) -> the backbone's file or directory
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flax import nnx

from agentrm_jax.models.lora import LoRAParam, add_lora
from agentrm_jax.rewards.heads import HeadConfig, ValueModel
from agentrm_jax.training.config import TrainConfig

__all__ = ["backbone_options", "build_model", "resolve_model_path", "start_head_at", "trainable_filter"]


def resolve_model_path(model: str) -> Path:
    """`bundled` -> the bundled GGUF; otherwise the path itself, which must exist."""
    if model == "bundled":
        from agentrm_jax.models import bundled_model_path

        return bundled_model_path()
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"TrainConfig.model: {path} does not exist; give an HF directory "
                                "(config.json + *.safetensors), a .gguf file, or 'bundled'")
    return path


def backbone_options(config: TrainConfig) -> dict[str, Any]:
    """The `ModelConfig` runtime fields that `config.compute` sets: how the forward runs, not what it
    computes (remat policy, scanned layers, attention kernel)."""
    compute = config.compute
    return {"remat": compute.remat, "scan_layers": compute.scan_layers, "attention_impl": compute.attention}


def build_model(config: TrainConfig, *, backbone=None, mesh=None) -> tuple[nnx.Module, Any]:
    """The model to train and the nnx filter of its trainable parameters.

    explicit / pairwise: a `ValueModel` (backbone + value head seeded by config.seed);
    implicit: the causal LM itself (its reference is the same weights with the adapters
    zeroed under LoRA, or a frozen copy of the base under full fine-tuning: see `TrainStep`).
    LoRA adapters are added for finetune="lora". `backbone` (a LlamaForCausalLM) skips loading;
    otherwise the backbone is read from `config.model` with every parameter built straight into its
    training sharding on `mesh` (`models.load_model(mesh=...)`: no device holds more than its shard),
    or onto the default device without a mesh. Either way `config.compute` (`backbone_options`) is
    applied to the backbone's ModelConfig.
    """
    options = backbone_options(config)
    if backbone is None:
        from agentrm_jax.models import load_model

        param_dtype = "float32"  # master weights stay float32; bf16 is the compute dtype
        compute = "bfloat16" if config.precision == "bf16" else "float32"
        backbone = load_model(resolve_model_path(config.model), dtype=compute, param_dtype=param_dtype, mesh=mesh,
                              config_overrides=options)
    elif any(getattr(backbone.config, k) != v for k, v in options.items()):
        # A static attribute (part of the graphdef): the forward reads it when traced.
        backbone.config = dataclasses.replace(backbone.config, **options)
    if config.finetune == "lora":
        add_lora(backbone, rank=config.lora.rank, alpha=config.lora.alpha, targets=config.lora.targets,
                 seed=config.seed)
    if config.kind in ("implicit", "sft"):  # the causal LM itself
        model = backbone
    else:
        model = ValueModel.create(backbone, HeadConfig(mlp_size=config.head_mlp, bias=config.head_init == "mean"),
                                  seed=config.seed)
    return model, trainable_filter(config)


def start_head_at(head, value: float) -> None:
    """Zero a value head's output weight and set its bias to `value` (in place): whatever the hidden
    states, the head then outputs `value` until training moves it (`TrainConfig.head_init` "mean").
    The arrays keep their shardings (arithmetic on each, not new arrays)."""
    if not head.config.bias:
        raise ValueError("start_head_at: the head has no bias (build it with HeadConfig(bias=True))")
    head.weight.set_value(head.weight[...] * 0.0)
    head.bias.set_value(head.bias[...] * 0.0 + value)


def trainable_filter(config: TrainConfig):
    """The nnx filter of the parameters `config.finetune` trains in `build_model`'s model."""
    if config.finetune == "full":
        return nnx.Param
    if config.finetune == "lora":
        return LoRAParam if config.kind in ("implicit", "sft") else nnx.Any(LoRAParam, nnx.PathContains("head"))
    return nnx.PathContains("head")

