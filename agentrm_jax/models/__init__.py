"""Llama-family models: config, NNX decoder, HF/GGUF loading, sharding rules, bundled model."""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use: see lazy_exports)
_EXPORTS = {
    "KVCache": "llama",
    "Llama3RopeScaling": "config",
    "LlamaForCausalLM": "llama",
    "ModelConfig": "config",
    "bundled_model_path": "bundled",
    "from_pretrained": "loading",
    "init_model": "llama",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "save_pretrained": "loading",
    "to_hf_state_dict": "loading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
