"""Shared fixtures. The bundled-model fixtures are session-scoped: loading the GGUF
into transformers takes ~20 s, so every real_model test shares one copy."""

from __future__ import annotations

import os

import pytest

# The CLI commands turn on jax's on-disk compilation cache (models/compile_cache.py), a process-wide
# setting: off in tests, so that no test's programs come from, or depend on, another test's run.
# tests/models/test_compile_cache.py turns it on explicitly.
os.environ.setdefault("AGENTRM_COMPILE_CACHE", "0")


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


@pytest.fixture(scope="session")
def bundled_tokenizer(bundled_path):
    """The bundled SmolLM2 tokenizer alone (ChatML template); cached on disk after the first conversion."""
    from agentrm_jax.models import load_tokenizer

    return load_tokenizer(bundled_path)


LLAMA3_STYLE_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@pytest.fixture(scope="session")
def llama3_style_tokenizer(bundled_path):
    """The bundled tokenizer with a Llama-3-style chat template (header tokens, <|eot_id|>, trimmed content)."""
    from agentrm_jax.models import load_tokenizer

    tokenizer = load_tokenizer(bundled_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|begin_of_text|>", "<|start_header_id|>",
                                                                "<|end_header_id|>", "<|eot_id|>"]})
    tokenizer.chat_template = LLAMA3_STYLE_TEMPLATE
    return tokenizer


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs_after_each_module():
    """Drop jax's compiled programs (and free their memory) when a test module ends.

    The jitted samplers, scorers and train steps take the model's structure as a static argument, so a
    long session accumulates one executable per tiny model seen; the full suite's process grew past 8 GB
    and twice died with a segfault inside libgcc's unwinder around 80% (2026-12-02). Bounding what one
    process holds keeps a module's tests the same and only costs recompiles across modules.
    """
    yield
    import gc
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
