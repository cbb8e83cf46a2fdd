"""The agent loop with the bundled SmolLM2 on every offline environment: a valid trajectory each."""

from __future__ import annotations

import pytest

from agentrm_jax.agents.loop import run_episode
from agentrm_jax.agents.policies import JaxPolicy
from agentrm_jax.records import read_jsonl, write_jsonl
from agentrm_jax.envs import make

ENVS = ["maze", "babyai", "pddl", "tools", "textworld", "sciworld"]


@pytest.fixture(scope="module")
def policy(bundled_ours):
    model, tokenizer = bundled_ours
    return JaxPolicy(model, tokenizer, max_new_tokens=48)


@pytest.mark.real_model
@pytest.mark.parametrize("name", ENVS)
def test_bundled_policy_plays_an_episode(name, policy, tmp_path):
    env = make(name, seed=1, split="test", max_turns=3)
    trajectory = run_episode(env, policy, seed=1)
    assert 1 <= len(trajectory.steps) <= 3 and env.turns == len(trajectory.steps)
    assert trajectory.task == env.name and trajectory.instruction and trajectory.id == f"{env.name}/test/1"
    assert 0.0 <= trajectory.progress <= 1.0 and trajectory.success == env.success
    assert all(step.observation for step in trajectory.steps)  # the env answered every turn, even bad text
    assert len(trajectory.meta["raw"]) == len(trajectory.steps)
    write_jsonl(tmp_path / "t.jsonl", [trajectory])
    (back,) = read_jsonl(tmp_path / "t.jsonl")
    assert back == trajectory
