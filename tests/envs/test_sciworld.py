"""Tests for the `sciworld` env (ScienceWorld's Java simulator; one JVM shared by the whole module)."""

from __future__ import annotations

import pickle
import random

import pytest

import agentrm_jax.envs.sciworld as sw
from agentrm_jax.envs.base import REGISTRY, make

SEEDS = range(5)
GARBAGE = ["", "reset task", "dance wildly", "focus", "go to the moon", "0", "1", "look at", "\n\t", "task"]


def test_registered():
    spec = REGISTRY["sciworld"]
    assert spec.env_type == "embodied" and spec.role == "held_in" and "SciWorld" in spec.stands_for


def test_missing_java_is_explained(monkeypatch):
    monkeypatch.setattr(sw, "_JVM", sw.SharedJvm(sw._start_gateway))  # a process with no JVM started yet
    monkeypatch.setattr(sw, "java_available", lambda: False)
    monkeypatch.setattr(sw, "_VARIATIONS", {})
    with pytest.raises(RuntimeError, match="apt-get install -y openjdk-17-jre-headless"):
        make("sciworld", seed=0)


def test_expert_replay_succeeds():
    for seed in SEEDS:
        env = make("sciworld", seed=seed, split="train")
        assert env.instruction and env.instruction in env.reset(seed)
        plan = env.expert_actions()
        assert 1 <= len(plan) <= env.max_turns and not env.success
        for action in plan:
            _, done = env.step(action)
            if done:
                break
        assert env.success and env.progress == 1.0 and env.done, (seed, env.task_name, env.variation)


def test_random_play_is_safe():
    rng = random.Random(0)
    for seed in SEEDS:
        env = make("sciworld", seed=seed, split="test", max_turns=12)
        valid = env.available_actions()  # ~0.1-1 s per call: sampled once per episode
        assert valid and "reset task" not in valid
        last = env.progress
        while not env.done:
            action = rng.choice(GARBAGE) if rng.random() < 0.3 else rng.choice(valid)
            obs, _ = env.step(action)
            assert isinstance(obs, str) and obs
            assert 0.0 <= env.progress <= 1.0 and env.progress >= last
            last = env.progress
        assert env.turns <= 12


def test_invalid_and_failing_actions():
    env = make("sciworld", seed=0, split="train")
    obs, done = env.step("dance wildly")
    assert obs.startswith("Nothing happens") and "Valid action templates" in obs and not done and env.turns == 1
    obs, done = env.step("reset task")
    assert obs.startswith("Nothing happens") and not done and env.turns == 2
    env.step("open door to outside")
    obs, done = env.step("focus on door")  # ambiguous door -> option 0 -> focusing on a wrong object fails the task
    assert "Ambiguous request" in obs or "failed" in obs
    if "failed" in obs:
        assert done and not env.success


def test_snapshot_restore_in_fresh_env():
    for seed in (1, 2):
        env = make("sciworld", seed=seed, split="train")
        plan = env.expert_actions()
        k = len(plan) // 2
        for action in plan[:k] + ["garbage"]:
            env.step(action)
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        fresh = REGISTRY["sciworld"].factory(split="train")
        fresh.restore(snap)
        assert fresh.turns == env.turns and fresh.progress == env.progress
        for action in ["look around", *plan[k:]]:
            assert env.step(action) == fresh.step(action)
            assert (env.progress, env.success, env.done) == (fresh.progress, fresh.success, fresh.done)
        assert fresh.success


def test_two_envs_in_one_jvm_are_independent():
    a, b = make("sciworld", seed=2, split="train"), make("sciworld", seed=3, split="train")
    ref = make("sciworld", seed=2, split="train")
    for action in a.expert_actions()[:4]:
        b.step("look around")
        assert a.step(action) == ref.step(action)


def test_deterministic_and_splits_disjoint():
    train = {(e.task_name, e.variation) for e in (make("sciworld", seed=s, split="train") for s in SEEDS)}
    test = {(e.task_name, e.variation) for e in (make("sciworld", seed=s, split="test") for s in SEEDS)}
    assert train == {(e.task_name, e.variation) for e in (make("sciworld", seed=s, split="train") for s in SEEDS)}
    assert not train & test
    for task in sw.TASKS[:2]:
        assert not set(sw.variations(task, "train")) & set(sw.variations(task, "test"))
    assert make("sciworld", seed=0, task="find-animal").task_name == "find-animal"


# -- reproducibility: ScienceWorld 1.2.3 alone varies room contents, their order and gold paths between simulator
# objects and resets (identity-hash ordering; a JVM-wide random generator); see the module docstring of sciworld.py.
REPRO_SEEDS = range(6)


def test_same_seed_same_task_in_every_env_object_and_reset():
    firsts, golds = {}, {}
    for seed in REPRO_SEEDS:
        a = make("sciworld", seed=seed, split="test")
        firsts[seed], golds[seed] = a.reset(seed), a.expert_actions()
        after = [a.step(action)[0] for action in golds[seed][:4]]
        assert a.reset(seed) == firsts[seed] and a.expert_actions() == golds[seed]
        assert [a.step(action)[0] for action in golds[seed][:4]] == after
        a.close()
    other = REGISTRY["sciworld"].factory(split="test")  # one object through every seed, in another order
    for seed in reversed(REPRO_SEEDS):
        assert other.reset(seed) == firsts[seed], seed
        assert other.expert_actions() == golds[seed], seed


def test_other_envs_between_calls_change_nothing():
    # another env loading, stepping and listing actions between this env's calls draws from the JVM-wide random
    # generator and resets its object ids; without each env's own copy, seeds 1, 4, 5 and 6 of test diverge here
    for seed in (1, 4, 5, 6):
        ref = make("sciworld", seed=seed, split="test")
        plan = ref.expert_actions()
        solo = [ref.step(action)[0] for action in plan] + [sorted(ref.available_actions())]
        env = make("sciworld", seed=seed, split="test")
        mixed = []
        for i, action in enumerate(plan):
            other = make("sciworld", seed=seed + 1 + i % 2, split="test")
            other.step("look around")
            other.available_actions()
            mixed.append(env.step(action)[0])
        assert mixed + [sorted(env.available_actions())] == solo, seed


def test_restore_replays_a_prefix_and_checks_it():
    for seed in REPRO_SEEDS:
        env = make("sciworld", seed=seed, split="test")
        plan = env.expert_actions()
        k = max(1, len(plan) // 2)
        for action in plan[:k]:
            env.step(action)
        snap = pickle.loads(pickle.dumps(env.snapshot()))
        fresh = REGISTRY["sciworld"].factory(split="test")
        fresh.restore(snap)
        assert (fresh.turns, fresh.progress, fresh.task_name, fresh.variation) == \
            (env.turns, env.progress, env.task_name, env.variation)
        for action in ["look around", *plan[k:]]:
            assert fresh.step(action) == env.step(action), (seed, action)
        forged = (snap[0], snap[1], "0" * 64)  # a snapshot whose observations this simulator does not give
        with pytest.raises(RuntimeError, match="gave other observations"):
            fresh.restore(forged)
