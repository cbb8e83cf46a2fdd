"""The `babyai` env (minigrid BabyAI levels as text): expert, random play, snapshot/restore, splits."""

from __future__ import annotations

import pickle
import random

import pytest

import minigrid  # noqa: F401,E402  (the envs extra installs it)

import agentrm_jax.envs.babyai as babyai_mod  # noqa: E402
from agentrm_jax.envs.base import REGISTRY, make  # noqa: E402

SEEDS = range(6)
SPLITS = ("train", "test")
GARBAGE = ["", "fly", "turn around", "pick", "move backward", "12", "toggle the universe"]


def test_registered():
    spec = REGISTRY["babyai"]
    assert (spec.env_type, spec.role, spec.stands_for) == ("embodied", "held_out", "AgentBoard BabyAI")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_expert_solves(split, seed):
    env = make("babyai", seed=seed, split=split)
    assert "Your mission:" in env.instruction
    expert = env.expert_actions()
    assert 1 <= len(expert) <= env.max_turns
    for action in expert:
        assert not env.done
        env.step(action)
    assert env.done and env.success and env.progress == 1.0


@pytest.mark.parametrize("level", babyai_mod.LEVELS)
def test_every_level_expert_solves(level):
    env = make("babyai", seed=0, level=level)
    assert env._current_level == level
    for action in env.expert_actions():
        env.step(action)
    assert env.success and env.progress == 1.0


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_play_is_well_formed(split, seed):
    rng = random.Random(seed)
    env = make("babyai", seed=seed, split=split, max_turns=25)
    progress, done = [env.progress], False
    while not done:
        observation, done = env.step(rng.choice(env.available_actions() + GARBAGE))
        assert isinstance(observation, str) and observation
        progress.append(env.progress)
        assert env.turns <= 25
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert all(a <= b for a, b in zip(progress, progress[1:]))
    assert env.success == (progress[-1] == 1.0)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snapshot_restore(split, seed):
    rng = random.Random(50 + seed)
    actions = ["turn left", "turn right", "move forward", "move forward"]
    env = make("babyai", seed=seed, split=split, max_turns=60)
    for _ in range(5):
        env.step(rng.choice(actions))
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    future = [rng.choice(actions + ["pick up", "toggle", "nonsense"]) for _ in range(10)]
    fresh = babyai_mod.BabyAIEnv(split=split, max_turns=60)
    fresh.restore(snap)
    assert (fresh.turns, fresh.progress, fresh.done, fresh.instruction) == \
        (env.turns, env.progress, env.done, env.instruction)
    for action in future:
        assert env.step(action) == fresh.step(action)
        assert (env.progress, env.success) == (fresh.progress, fresh.success)


def test_same_seed_same_task_and_splits_disjoint():
    def task(split, seed):
        env = make("babyai", seed=seed, split=split)
        return env._current_level, env._instance_seed, env.env.mission

    train = [task("train", s) for s in range(12)]
    test = [task("test", s) for s in range(12)]
    assert train == [task("train", s) for s in range(12)]
    assert not set(train) & set(test)


def test_same_seed_same_first_observation():
    first = [babyai_mod.BabyAIEnv(split="test").reset(5) for _ in range(2)]
    assert first[0] == first[1]


def test_invalid_action_is_informative_and_counts():
    env = make("babyai", seed=0)
    observation, done = env.step("do a backflip")
    assert "Valid actions" in observation and "turn left" in observation
    assert env.turns == 1 and not done


@pytest.mark.parametrize("text,index", [
    ("turn left", 0), ("Turn Right.", 1), ("move forward", 2), ("go forward", 2), ("pick up the red ball", 3),
    ("pickup", 3), ("drop", 4), ("open the door", 5), ("toggle", 5), ("jump", None), ("", None),
])
def test_parse_action(text, index):
    assert babyai_mod.parse_action(text) == index


def test_observation_mentions_relative_positions_and_carrying():
    env = babyai_mod.BabyAIEnv(level="GoToObj")
    observation = env.reset(0)
    assert "You are not carrying anything." in observation
    assert "step" in observation or "no objects" in observation


def test_max_turns_respected():
    env = make("babyai", seed=1, max_turns=3)
    for _ in range(3):
        _, done = env.step("turn left")
    assert done and env.turns == 3
    assert env.step("turn left") == ("The episode is over.", True)
