"""Shared fixtures. The bundled-model fixtures are session-scoped: loading the GGUF
into transformers takes ~20 s, so every real_model test shares one copy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bundled_path():
    from agentrm_jax.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def bundled_ours(bundled_path):
    """(model, tokenizer) of the bundled SmolLM2 GGUF, loaded by agentrm_jax, float32."""
    from agentrm_jax.models import from_pretrained

    return from_pretrained(bundled_path)


@pytest.fixture(scope="session")
def bundled_torch(bundled_path):
    """transformers' LlamaForCausalLM loaded from the same GGUF (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(bundled_path.parent), gguf_file=bundled_path.name,
                                                 dtype=torch.float32)
    return model.eval()
