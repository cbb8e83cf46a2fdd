"""The model a run trains: the backbone (+ LoRA) (+ value head) and the filter of its trainable parameters.

    build_model(config) -> (model, trainable filter)
    resolve_model_path(config.model) -> the backbone's file or directory
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flax import nnx

from agentrm_jax.models.lora import LoRAParam, add_lora
from agentrm_jax.rewards.heads import HeadConfig, ValueModel
from agentrm_jax.training.config import TrainConfig

__all__ = ["build_model", "resolve_model_path"]


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


def build_model(config: TrainConfig, *, backbone=None) -> tuple[nnx.Module, Any]:
    """The model to train and the nnx filter of its trainable parameters.

    explicit / pairwise: a `ValueModel` (backbone + value head seeded by config.seed);
    implicit: the causal LM itself (its reference is the same weights with the adapters
    zeroed under LoRA, or a frozen copy of the base under full fine-tuning: see `_reference`).
    LoRA adapters are added for finetune="lora". `backbone` (a LlamaForCausalLM) skips loading.
    """
    if backbone is None:
        from agentrm_jax.models import load_model

        param_dtype = "float32"  # master weights stay float32; bf16 is the compute dtype
        compute = "bfloat16" if config.precision == "bf16" else "float32"
        backbone = load_model(resolve_model_path(config.model), dtype=compute, param_dtype=param_dtype)
    if config.finetune == "lora":
        add_lora(backbone, rank=config.lora.rank, alpha=config.lora.alpha, targets=config.lora.targets,
                 seed=config.seed)
    if config.kind == "implicit":
        model = backbone
    else:
        model = ValueModel.create(backbone, HeadConfig(mlp_size=config.head_mlp), seed=config.seed)
    if config.finetune == "full":
        trainable = nnx.Param
    elif config.finetune == "lora":
        trainable = LoRAParam if config.kind == "implicit" else nnx.Any(LoRAParam, nnx.PathContains("head"))
    else:
        trainable = nnx.PathContains("head")
    return model, trainable

