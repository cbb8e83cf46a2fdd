"""The SFT run's episode evaluation plays the plain model: the trainer's remat / scanned layers (backward-pass
memory savers) are off in the policy it samples, over the very same weight arrays."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from sft_helpers import demos, tiny_tokenizer  # noqa: E402
from trainer_helpers import tiny_model  # noqa: E402


def _training_model(vocab_size: int):
    """A tiny LoRA'd causal LM configured as `agentrm sft` trains it on the CPU (configs/sft_cpu.yaml)."""
    import dataclasses

    from agentrm_jax.models.lora import add_lora

    model = tiny_model(0, vocab_size=vocab_size)
    model.config = dataclasses.replace(model.config, remat="full", scan_layers=True)
    return add_lora(model, rank=2, alpha=4.0, seed=3)


def test_inference_model_is_plain_and_shares_the_weights():
    from agentrm_jax.sft.episodes import inference_model

    model = _training_model(256)
    plain = inference_model(model)
    assert (plain.config.remat, plain.config.scan_layers) == ("none", False)
    assert (model.config.remat, model.config.scan_layers) == ("full", True)  # the trainer's model unchanged
    assert plain.layers[1].attn.q_proj[...] is model.layers[1].attn.q_proj[...]  # no copy of any weight
    assert plain.layers[1].attn.q_proj_lora_b[...] is model.layers[1].attn.q_proj_lora_b[...]
    assert inference_model(plain) is plain
    ids = jnp.asarray(np.arange(2, 34, dtype=np.int32).reshape(2, 16))
    mask = jnp.ones(ids.shape, bool)
    np.testing.assert_allclose(np.asarray(plain(ids, mask)), np.asarray(model(ids, mask)), atol=1e-5)


def test_episode_eval_samples_the_plain_model():
    from agentrm_jax.sft.episodes import EpisodeEval

    tokenizer = tiny_tokenizer(demos("tool_query", range(2)), vocab_size=400)
    model = _training_model(len(tokenizer))
    evaluator = EpisodeEval(["tool_query"], range(2), tokenizer, max_turns=1, max_new_tokens=4)
    played = evaluator.policy(model).sampler.model
    assert (played.config.remat, played.config.scan_layers) == ("none", False)
    scores = evaluator(1, model)
    assert set(scores) == {"play_tool_query_success", "play_tool_query_progress", "play_success", "play_progress"}
    assert 0.0 <= scores["play_progress"] <= 1.0
    assert (model.config.remat, model.config.scan_layers) == ("full", True)
