"""Tests for the `twx` envs (TextWorldExpress's Java simulator; one JVM shared by the whole module)."""

from __future__ import annotations

import pickle
import random
import statistics
import subprocess
import sys

import pytest

import agentrm_jax.envs.twx as twx
from agentrm_jax.envs.base import REGISTRY, make

ENVS = ("twx", "twx_cookingworld", "twx_twc", "twx_coin", "twx_mapreader")
SPLITS = ("train", "test")
SEEDS = range(10)
GARBAGE = ["", "xyzzy", "quit", "restart", "help", "take the moon", "look at", "\n\t", "0", "move up",
           "put everything everywhere", "reset"]


def test_registered_roles():
    for name in ("twx", "twx_cookingworld", "twx_twc"):
        spec = REGISTRY[name]
        assert spec.role == "held_in" and spec.stands_for == "AgentRM ALFWorld" and spec.env_type == "embodied"
    for name in ("twx_coin", "twx_mapreader"):
        assert REGISTRY[name].role == "held_out" and "none of AgentRM's nine tasks" in REGISTRY[name].stands_for


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", ENVS)
def test_expert_succeeds_with_full_progress(name, split):
    env = make(name, seed=0, split=split)
    for seed in SEEDS:
        first = env.reset(seed)
        assert env.instruction and first.startswith(env.instruction) and env.progress == 0.0
        plan = env.expert_actions()
        assert 1 <= len(plan) < env.max_turns and not env.success
        last = env.progress
        for i, action in enumerate(plan):
            _, done = env.step(action)
            assert last <= env.progress <= 1.0
            last = env.progress
            assert done == (i == len(plan) - 1), (seed, i, action)
        assert env.success and env.progress == 1.0 and env.done, (name, split, seed, env.game, env.game_seed)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", ENVS)
def test_random_and_garbage_play_keeps_progress_monotone(name, split):
    rng = random.Random(hash((name, split)) % 1000)
    env = make(name, seed=0, split=split, max_turns=25)
    for seed in SEEDS:
        env.reset(seed)
        last = env.progress
        while not env.done:
            action = rng.choice(GARBAGE) if rng.random() < 0.3 else rng.choice(env.available_actions())
            obs, _ = env.step(action)
            assert isinstance(obs, str) and obs
            assert 0.0 <= last <= env.progress <= 1.0
            last = env.progress
        assert env.turns <= 25


@pytest.mark.parametrize("name", ENVS)
def test_snapshot_restore_reproduces_observations(name):
    rng = random.Random(1)
    env = make(name, seed=3, split="test")
    plan = env.expert_actions()
    k = len(plan) // 2
    for action in [*plan[:k], "garbage", rng.choice(env.available_actions())]:
        env.step(action)
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    fresh = make(name, seed=7, split="test")  # another task first: restore must switch back
    fresh.restore(snap)
    assert (fresh.turns, fresh.progress, fresh.available_actions()) == (env.turns, env.progress,
                                                                       env.available_actions())
    for _ in range(6):
        action = rng.choice(env.available_actions() + ["nonsense"])
        assert env.step(action) == fresh.step(action)
        assert (env.progress, env.success, env.done) == (fresh.progress, fresh.success, fresh.done)


@pytest.mark.parametrize("name", ENVS)
def test_train_and_test_tasks_differ(name):
    def tasks(split):
        env = make(name, seed=0, split=split)
        out = set()
        for seed in SEEDS:
            first = env.reset(seed)
            out.add((env.game, env.game_seed, first, tuple(env.expert_actions())))
        return out, env

    train, env_train = tasks("train")
    test, env_test = tasks("test")
    assert train == tasks("train")[0]  # the same (split, seed) is the same task
    assert {t[1] for t in train} <= set(twx.game_seeds(env_train.game, "train"))
    assert not {(g, s) for g, s, *_ in train} & {(g, s) for g, s, *_ in test}
    assert not {t[2:] for t in train} & {t[2:] for t in test}


def test_family_alternates_household_games():
    family = make("twx", seed=0, split="test")
    cooking, tidy = make("twx_cookingworld", seed=0, split="test"), make("twx_twc", seed=0, split="test")
    for seed in range(6):
        first = family.reset(seed)
        member = cooking if seed % 2 == 0 else tidy
        assert family.game == ("cookingworld", "twc")[seed % 2]
        assert first == member.reset(seed // 2) and family.expert_actions() == member.expert_actions()
    assert make("twx", seed=1, game="cookingworld").game == "cookingworld"
    with pytest.raises(ValueError, match="unknown game 'coin'; choose one of cookingworld, twc"):
        make("twx", seed=0, game="coin")


def test_invalid_action_is_answered_and_changes_nothing():
    env = make("twx_cookingworld", seed=0, split="train")
    valid = env.available_actions()
    for i, action in enumerate(GARBAGE, start=1):
        obs, done = env.step(action)
        assert obs.startswith("Nothing happens") and "Valid actions: " in obs and not done, action
        assert env.turns == i and env.available_actions() == valid and env.progress == 0.0
    obs, _ = env.step("  TAKE Cookbook. ")  # case, spaces and trailing punctuation are forgiven
    assert obs == "You take the cookbook." and "examine cookbook" in env.available_actions()


def test_bare_direction_means_move():
    env = make("twx_mapreader", seed=0, split="test")
    move = next(a for a in env.available_actions() if a.startswith("move "))
    obs, _ = env.step(move.split()[1].upper())
    assert not obs.startswith("Nothing happens")
    env2 = make("twx_mapreader", seed=0, split="test")
    assert env2.step("go " + move.split()[1]) == (obs, False)


def test_household_gold_path_about_six():
    lengths = []
    env = make("twx", seed=0)
    for split in SPLITS:
        env = make("twx", seed=0, split=split)
        for seed in range(20):
            env.reset(seed)
            lengths.append(len(env.expert_actions()))
    assert 5.5 <= statistics.mean(lengths) <= 7.5, statistics.mean(lengths)


def test_difficulty_knob():
    easy = make("twx_twc", seed=4, split="test")
    hard = make("twx_twc", seed=4, split="test", params={"numItemsToPutAway": 4})
    assert easy.game_params("twc")["numItemsToPutAway"] == 2
    assert len(hard.expert_actions()) > len(easy.expert_actions())
    family = make("twx", seed=1, params={"numItemsToPutAway": 3})  # only twc has it
    assert family.game_params("twc")["numItemsToPutAway"] == 3 and "numItemsToPutAway" not in \
        family.game_params("cookingworld")
    with pytest.raises(ValueError, match="twx: unknown game parameter 'maxDistanceApart' for cookingworld/twc"):
        make("twx", seed=0, params={"maxDistanceApart": 3})
    with pytest.raises(ValueError, match="must be an integer, got True"):
        make("twx_coin", seed=0, params={"includeDoors": True})
    with pytest.raises(ValueError, match=r"rejected the cookingworld parameters .*less than or equal to 11"):
        make("twx_cookingworld", seed=0, params={"numLocations": 99})


def test_unbuildable_seed_is_replaced_by_the_next(monkeypatch):
    params = {"numLocations": 4, "maxDistanceApart": 8}  # fold seeds 0 and 1 cannot be built with these
    env = make("twx_mapreader", seed=0, split="train", params=params)
    assert env.game_seed == 2
    for action in env.expert_actions():
        env.step(action)
    assert env.success
    monkeypatch.setattr(twx, "_REDRAWS", 2)
    with pytest.raises(ValueError, match=r"cannot generate mapreader games .*seeds 0 and the 1 after it failed"):
        make("twx_mapreader", seed=0, split="train", params=params)


def test_coin_expert_is_the_same_in_another_process():
    script = ("import agentrm_jax.envs.twx\nfrom agentrm_jax.envs.base import make\n"
              "env = make('twx_coin', seed=0, split='test')\n"
              "print([(env.reset(s), env.expert_actions())[1] for s in range(6)])\n")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    env = make("twx_coin", seed=0, split="test")
    assert other.strip() == str([(env.reset(s), env.expert_actions())[1] for s in range(6)])


def test_missing_package_and_java_are_explained(monkeypatch):
    monkeypatch.setattr(twx, "_JVM", twx.SharedJvm(twx._start_gateway))  # a process with no JVM started yet
    monkeypatch.setattr(twx, "_SEEDS", {})
    monkeypatch.setitem(sys.modules, "textworld_express", None)
    with pytest.raises(ImportError, match=r"pip install textworld-express==1\.1\.0"):
        make("twx", seed=0)
    monkeypatch.delitem(sys.modules, "textworld_express")
    monkeypatch.setattr(twx, "java_available", lambda: False)
    with pytest.raises(RuntimeError, match="apt-get install -y openjdk-17-jre-headless"):
        make("twx", seed=0)


@pytest.mark.real_model
def test_bundled_policy_plays_a_twx_episode(bundled_ours):
    from agentrm_jax.agents.loop import run_episode
    from agentrm_jax.agents.policies import JaxPolicy

    model, tokenizer = bundled_ours
    env = make("twx", seed=1, split="test", max_turns=3)
    trajectory = run_episode(env, JaxPolicy(model, tokenizer, max_new_tokens=48), seed=1)
    assert 1 <= len(trajectory.steps) <= 3 and env.turns == len(trajectory.steps)
    assert trajectory.task == "twx" and trajectory.instruction.startswith(env.instruction)
    assert 0.0 <= trajectory.progress <= 1.0 and trajectory.success == env.success
    assert all(step.observation for step in trajectory.steps)
