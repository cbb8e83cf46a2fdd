"""The `maze` env: expert solves, random play stays well-formed, snapshot/restore, split disjointness."""

from __future__ import annotations

import pickle
import random

import pytest

import agentrm_jax.envs.maze as maze_mod
from agentrm_jax.envs.base import REGISTRY, make

SEEDS = range(6)
SPLITS = ("train", "test")
GARBAGE = ["", "dance", "move diagonally", "north east", "!!!", "move north and then south", "42", "fly up up"]


def _random_episode(env, rng: random.Random) -> list[float]:
    progress = [env.progress]
    done = False
    while not done:
        action = rng.choice(env.available_actions() + GARBAGE)
        _, done = env.step(action)
        progress.append(env.progress)
        assert env.turns <= env.max_turns
    return progress


def test_registered():
    spec = REGISTRY["maze"]
    assert (spec.env_type, spec.role, spec.stands_for, spec.source) == ("game", "held_out", "AgentBoard Maze", "ours")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_expert_solves(split, seed):
    env = make("maze", seed=seed, split=split)
    assert "The goal is at" in env.instruction
    expert = env.expert_actions()
    assert 1 <= len(expert) <= env.max_turns
    for i, action in enumerate(expert):
        _, done = env.step(action)
        assert done == (i == len(expert) - 1)
    assert env.success and env.progress == 1.0 and env.done


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_play_is_well_formed(split, seed):
    env = make("maze", seed=seed, split=split, max_turns=12)
    progress = _random_episode(env, random.Random(seed))
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert all(a <= b for a, b in zip(progress, progress[1:]))
    assert env.done and (env.success or env.turns == 12)
    assert env.step("move north") == ("The episode is over.", True)


def test_progress_tracks_distance():
    env = make("maze", seed=4)
    expert = env.expert_actions()
    env.step(expert[0])
    assert env.progress == pytest.approx(1 / len(expert))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snapshot_restore(split, seed):
    rng = random.Random(100 + seed)
    env = make("maze", seed=seed, split=split)
    for _ in range(4):
        env.step(rng.choice(env.available_actions()))
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    future = [rng.choice(env.available_actions() + ["oops"]) for _ in range(8)] + env.expert_actions()
    fresh = maze_mod.MazeEnv(split=split)
    fresh.restore(snap)
    assert (fresh.turns, fresh.progress, fresh.done) == (env.turns, env.progress, env.done)
    for action in future:
        assert env.step(action) == fresh.step(action)
        assert (env.progress, env.success, env.turns) == (fresh.progress, fresh.success, fresh.turns)


def test_restore_into_env_on_another_seed():
    env = make("maze", seed=1)
    env.step("move north")
    other = make("maze", seed=2)
    other.restore(env.snapshot())
    assert other.instruction == env.instruction
    assert other.step("move south") == env.step("move south")


def test_same_seed_same_task_and_splits_disjoint():
    train = [make("maze", seed=s, split="train").instruction for s in range(20)]
    test = [make("maze", seed=s, split="test").instruction for s in range(20)]
    assert train == [make("maze", seed=s, split="train").instruction for s in range(20)]
    assert not set(train) & set(test)
    assert len(set(train)) > 15


def test_invalid_action_is_informative_and_counts():
    env = make("maze", seed=0)
    observation, done = env.step("jump over the wall")
    assert "Valid actions" in observation and "move north" in observation and "You are at" in observation
    assert env.turns == 1 and not done


@pytest.mark.parametrize("text,direction", [
    ("move north", "north"), ("Go East.", "east"), ("SOUTH", "south"), ("move up", "north"),
    ("Action: move to the west!", "west"), ("dance", None), ("north south", None), ("", None),
])
def test_parse_move(text, direction):
    assert maze_mod.parse_move(text) == direction


def test_max_turns_respected():
    env = make("maze", seed=0, max_turns=2)
    env.step("dance")
    _, done = env.step("dance")
    assert done and env.turns == 2 and not env.success
