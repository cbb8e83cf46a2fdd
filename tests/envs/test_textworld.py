"""Tests for the `textworld` env (games generated offline and cached; ~2 s per game on first use)."""

from __future__ import annotations

import pickle
import random

import pytest

import agentrm_jax.envs.textworld as tw_env
from agentrm_jax.envs.base import REGISTRY, make

SEEDS = range(5)
GARBAGE = ["", "quit", "restart", "save", "undo", "xyzzy", "go nowhere", "take the moon", "EAST!!", "\n\t",
           "look look look", "y"]


def test_registered():
    spec = REGISTRY["textworld"]
    assert spec.env_type == "game" and spec.role == "held_out" and "Jericho" in spec.stands_for
    assert spec.source == "textworld 1.7.0 generator"


def test_expert_replay_succeeds():
    for seed in SEEDS:
        env = make("textworld", seed=seed, split="train")
        plan = env.expert_actions()
        assert 2 <= len(plan) <= 8 and env.progress < 1.0 and not env.success
        assert env.instruction and env.instruction in env.reset(seed)
        last = env.progress
        for i, action in enumerate(plan):
            assert action in env.available_actions()
            obs, done = env.step(action)
            assert env.progress > last or env.progress == 1.0, (seed, i, obs)
            last = env.progress
            assert done == (i == len(plan) - 1)
        assert env.success and env.progress == 1.0 and env.done


def test_random_play_is_safe():
    rng = random.Random(0)
    for seed in SEEDS:
        env = make("textworld", seed=seed, split="train", max_turns=15)
        last = env.progress
        while not env.done:
            action = rng.choice(GARBAGE) if rng.random() < 0.3 else rng.choice(env.available_actions())
            obs, _ = env.step(action)
            assert isinstance(obs, str) and obs
            assert 0.0 <= env.progress <= 1.0 and env.progress >= last
            last = env.progress
        assert env.turns <= 15 and (env.success or env.turns == 15 or env._state["lost"])


def test_invalid_actions_never_reach_the_engine():
    env = make("textworld", seed=0, split="train")
    before = env.available_actions()
    for turn, action in enumerate(["quit", "restart", "blah"], 1):
        obs, done = env.step(action)
        assert obs.startswith("Nothing happens") and "Valid actions:" in obs and not done and env.turns == turn
    assert env.available_actions() == before
    obs, _ = env.step(env.expert_actions()[0].upper() + ".")  # case and punctuation are forgiven
    assert not obs.startswith("Nothing happens")


def test_snapshot_restore_in_fresh_env():
    for seed in SEEDS:
        env = make("textworld", seed=seed, split="train")
        plan = env.expert_actions()
        env.step("look")
        env.step(plan[0])
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        fresh = REGISTRY["textworld"].factory(split="train")
        fresh.restore(snap)
        assert fresh.turns == env.turns and fresh.progress == env.progress
        assert fresh.available_actions() == env.available_actions()
        for action in ["inventory", *plan[1:]]:
            assert env.step(action) == fresh.step(action)
            assert (env.progress, env.success) == (fresh.progress, fresh.success)
        assert fresh.success


def test_deterministic_and_splits_disjoint():
    train = [make("textworld", seed=s, split="train").reset(s) for s in (0, 1)]
    test = [make("textworld", seed=s, split="test").reset(s) for s in (0, 1)]
    assert train == [make("textworld", seed=s, split="train").reset(s) for s in (0, 1)]
    assert not set(train) & set(test)
    assert tw_env.game_settings("train", 0) != tw_env.game_settings("test", 0)


def test_cache_dir_is_atomic_and_reused(tmp_path):
    first = tw_env.game_file("train", 1, cache_dir=tmp_path)
    assert first.exists() and first.with_suffix(".json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    mtime = first.stat().st_mtime
    assert tw_env.game_file("train", 1, cache_dir=tmp_path) == first and first.stat().st_mtime == mtime
    env = make("textworld", seed=1, split="train", cache_dir=tmp_path)
    assert env.reset(1) == make("textworld", seed=1, split="train").reset(1)  # same game as the default cache


@pytest.mark.parametrize("text,expected", [("East.", "go east"), ("e", "go east"), ("  Take   Key ", "take key"),
                                           ("move north!", "go north")])
def test_normalise(text, expected):
    assert tw_env._normalise(text) == expected
