"""Implicit PRM: per-step rewards against an independent transformers+torch computation; LoRA reference."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from rm_helpers import random_trajectories

from agentrm_jax.models import load_model
from agentrm_jax.rewards import ImplicitPRM, ScoringConfig, aggregate_steps, outcome_loss


def _tiny_hf_pair(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=2, bos_token_id=1, eos_token_id=2)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
        model.save_pretrained(tmp_path / f"m{seed}")
        models.append(model)
    return models


def test_step_rewards_match_torch(tmp_path, bundled_tokenizer):
    import torch

    theta_t, ref_t = _tiny_hf_pair(tmp_path)
    beta = 0.5
    prm = ImplicitPRM(load_model(tmp_path / "m0"), load_model(tmp_path / "m1"), bundled_tokenizer, beta=beta,
                      aggregate="sum", config=ScoringConfig(batch_size=4))
    trajectories = random_trajectories(6, seed=3)
    scores, steps = prm.score_with_steps(trajectories)
    rendered = prm.scorer.render(trajectories)
    for traj, r, score, step_scores in zip(trajectories, rendered, scores, steps):
        ids = torch.tensor(r.input_ids[None].astype(np.int64))
        with torch.no_grad():
            lp = [torch.log_softmax(m(ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])[:, 0].numpy()
                  for m in (theta_t, ref_t)]
        ratio = beta * (lp[0] - lp[1])  # reward of token t+1
        agent = r.agent_mask[1:]
        expected_steps = [ratio[s - 1:e][agent[s - 1:e]].sum() for s, e in zip(r.step_starts, r.step_ends)]
        np.testing.assert_allclose(step_scores, expected_steps, atol=1e-4)
        np.testing.assert_allclose(score, ratio[agent].sum(), atol=1e-4)
        assert len(step_scores) == len(traj.steps)
    assert any(len(t.steps) == 0 for t in trajectories) and np.isfinite(scores).all()


def test_lora_policy_uses_its_own_base_as_reference(tmp_path, bundled_tokenizer):
    from flax import nnx

    from agentrm_jax.models.lora import LoRAParam, add_lora

    _tiny_hf_pair(tmp_path)
    policy = add_lora(load_model(tmp_path / "m0"), rank=2, alpha=4.0, seed=0)
    trajectories = random_trajectories(4, seed=5)
    untouched = ImplicitPRM(policy, None, bundled_tokenizer, aggregate="sum").score(trajectories)
    np.testing.assert_allclose(untouched, 0.0, atol=1e-6)  # B = 0: policy equals its reference
    for path, var in nnx.to_flat_state(nnx.state(policy, LoRAParam)):
        if path[-1].endswith("_lora_b"):
            var.set_value(var.get_value() + 0.01)
    shared = ImplicitPRM(policy, None, bundled_tokenizer, aggregate="sum").score_with_steps(trajectories)
    explicit_ref = ImplicitPRM(policy, load_model(tmp_path / "m0"), bundled_tokenizer,
                               aggregate="sum").score_with_steps(trajectories)
    np.testing.assert_allclose(shared[0], explicit_ref[0], atol=1e-5)
    assert np.abs(shared[0]).max() > 1e-4
    with pytest.raises(ValueError, match="needs a policy with LoRA adapters"):
        ImplicitPRM(load_model(tmp_path / "m1"), None, bundled_tokenizer).score(trajectories)


def test_step_rewards_add_up_to_the_trajectory_reward(bundled_tokenizer):
    """Steps partition the agent tokens: with "sum" the score (every agent token) is the sum of the step
    rewards, and each other aggregation is that function of the same step rewards."""
    from agentrm_jax.models import ModelConfig, init_model

    config = ModelConfig.tiny(vocab_size=49152)
    policy, reference = init_model(config, seed=0), init_model(config, seed=1)
    trajectories = random_trajectories(12, seed=4)
    assert sum(len(t.steps) > 1 for t in trajectories) >= 3
    reduce = {"sum": np.sum, "min": np.min, "mean": np.mean, "last": lambda s: s[-1]}
    for how, fn in reduce.items():
        prm = ImplicitPRM(policy, reference, bundled_tokenizer, beta=0.5, aggregate=how,
                          config=ScoringConfig(batch_size=4))
        scores, steps = prm.score_with_steps(trajectories)
        assert all(len(s) == len(t.steps) and np.isfinite(s).all() for s, t in zip(steps, trajectories))
        expected = [fn(s) if len(s) else 0.0 for s in steps]
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6, err_msg=how)
        if how == "sum":
            assert np.abs(scores).max() > 1e-3  # the models differ: rewards are not all zero


def test_aggregations_and_outcome_loss():
    rewards = jnp.asarray([[0.5, -1.0, 2.0, 9.0], [1.0, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    valid = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_allclose(aggregate_steps(rewards, valid, "min"), [-1.0, 1.0, 0.0])
    np.testing.assert_allclose(aggregate_steps(rewards, valid, "sum"), [1.5, 1.0, 0.0])
    np.testing.assert_allclose(aggregate_steps(rewards, valid, "mean"), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(aggregate_steps(rewards, valid, "last"), [2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate_steps(rewards, valid, "max")
    loss = float(outcome_loss(jnp.asarray([2.0, -1.0]), jnp.asarray([1.0, 0.0])))
    np.testing.assert_allclose(loss, np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))]), rtol=1e-6)
