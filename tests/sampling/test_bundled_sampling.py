"""The bundled SmolLM2 GGUF: our logits and greedy decoding against transformers loading the same file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jax.numpy as jnp

from agentrm_jax.sampling import Sampler

pytestmark = pytest.mark.real_model

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
TEXT = ("Reward models score the partial trajectories of an agent. A policy proposes several actions at each "
        "step, the reward model ranks them, and beam search keeps the best few. ") * 6


def test_logits_agree_with_transformers_on_a_real_prompt(bundled_ours, bundled_torch):
    model, tokenizer = bundled_ours
    ids = tokenizer(TEXT)["input_ids"]
    assert len(ids) > 150
    with torch.no_grad():
        ref = bundled_torch(input_ids=torch.tensor([ids])).logits[0].numpy()
    got = np.asarray(model(jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32))[0])
    top1 = np.mean(ref.argmax(-1) == got.argmax(-1))
    assert top1 >= 0.99, f"top-1 agreement {top1:.3f}"
    assert np.abs(ref - got).max() < 1e-2


def test_greedy_chat_continuation_matches_transformers(bundled_ours, bundled_torch):
    model, tokenizer = bundled_ours
    sampler = Sampler(model, tokenizer)
    ids = sampler.encode(CHAT)
    completion = sampler.generate([CHAT], max_new_tokens=32)[0][0]
    with torch.no_grad():
        out = bundled_torch.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=32, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    expected = tuple(out[0, len(ids):].tolist())
    assert completion.token_ids == expected
    assert "Paris" in completion.text
