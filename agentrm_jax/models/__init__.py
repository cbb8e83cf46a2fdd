"""Llama-family models: config, NNX decoder, HF/GGUF loading, sharding rules, bundled model."""

from agentrm_jax.models.bundled import bundled_model_path
from agentrm_jax.models.config import Llama3RopeScaling, ModelConfig
from agentrm_jax.models.llama import KVCache, LlamaForCausalLM, init_model
from agentrm_jax.models.loading import (from_pretrained, load_model, load_tokenizer, save_pretrained,
                                        to_hf_state_dict)

__all__ = [
    "KVCache", "Llama3RopeScaling", "LlamaForCausalLM", "ModelConfig", "bundled_model_path",
    "from_pretrained", "init_model", "load_model", "load_tokenizer", "save_pretrained", "to_hf_state_dict",
]
