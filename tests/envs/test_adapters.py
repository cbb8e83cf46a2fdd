"""Tests for the data adapters: `webshop` on a 5-product fixture, `alfworld` on its error paths and demangling."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

import agentrm_jax.envs.alfworld as alf
import agentrm_jax.envs.webshop as ws
from agentrm_jax.envs.base import REGISTRY, make

FIXTURE = Path(__file__).parent / "fixtures" / "webshop"
GARBAGE = ["", "buy", "click", "click[]", "search[]", "click[nonexistent]", "search [", "[Buy Now]", "\n",
           "click[B000NOTHERE]", "SEARCH[shirt]"]


def shop(seed=0, split="train", **kw):
    return make("webshop", seed=seed, split=split, data_dir=FIXTURE, **kw)


# -- webshop ------------------------------------------------------------------------------------------
def test_webshop_registered():
    spec = REGISTRY["webshop"]
    assert spec.env_type == "web" and spec.role == "held_in"


def test_webshop_missing_data(monkeypatch, tmp_path):
    monkeypatch.delenv("WEBSHOP_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="items_human_ins.json.*WEBSHOP_DATA"):
        make("webshop", seed=0)
    with pytest.raises(FileNotFoundError, match="items_shuffle_1000.json"):
        make("webshop", seed=0, data_dir=tmp_path)
    monkeypatch.setenv("WEBSHOP_DATA", str(FIXTURE))
    assert make("webshop", seed=0).instruction == shop(0).instruction


def test_webshop_splits():
    cat = shop().catalogue
    train = {g.instruction for g in cat.splits["train"]}
    test = {g.instruction for g in cat.splits["test"]}
    assert len(train) == 9 and len(test) == 2 and not train & test
    assert shop(3).instruction == shop(3).instruction
    assert {shop(s, "test").instruction for s in range(2)} == test


@pytest.mark.parametrize("split,seeds", [("train", range(9)), ("test", range(2))])
def test_webshop_expert_replay(split, seeds):
    for seed in seeds:
        env = shop(seed, split)
        assert "Instruction:" in env.reset(seed) and env.available_actions() is None
        plan = env.expert_actions()
        for i, action in enumerate(plan):
            if i:
                assert action.lower() in [a.lower() for a in env.available_actions()]
            _, done = env.step(action)
        assert done and env.success and env.progress == 1.0


def test_webshop_wrong_purchase_partial_reward():
    env = shop(5)  # slim fit shirt, light blue, large
    assert "slim fit" in env.instruction
    for action in ["search[dress shirt]", "click[B000TEST02]", "click[white]", "click[large]", "click[buy now]"]:
        _, done = env.step(action)
    assert done and not env.success and 0.5 < env.progress < 1.0  # one of the two options is wrong
    env = shop(5)
    for action in ["search[water bottle]", "click[b000test05]", "click[Buy Now]"]:
        env.step(action)
    assert env.done and env.progress == 0.0


def test_webshop_random_play_is_safe():
    rng = random.Random(0)
    words = ["shirt", "deodorant", "snack", "bottle", "headphones", "black", "free"]
    for seed in range(6):
        env = shop(seed, max_turns=12)
        last = env.progress
        while not env.done:
            actions = env.available_actions()
            if rng.random() < 0.25:
                action = rng.choice(GARBAGE)
            elif actions is None:
                action = f"search[{' '.join(rng.sample(words, 2))}]"
            else:
                action = rng.choice(actions)
            obs, _ = env.step(action)
            assert isinstance(obs, str) and obs
            assert 0.0 <= env.progress <= 1.0 and env.progress >= last
            last = env.progress
        assert env.turns <= 12


def test_webshop_invalid_and_navigation():
    env = shop(0)
    obs, done = env.step("click[Buy Now]")
    assert obs.startswith("Nothing happens") and not done and env.turns == 1
    obs, _ = env.step("search[deodorant sensitive skin]")
    assert "[B000TEST01]" in obs and "Page 1" in obs
    env.step("click[B000TEST01]")
    obs, _ = env.step("click[Description]")
    assert "sensitive skin" in obs
    obs, _ = env.step("click[< Prev]")
    assert "[Buy Now]" in obs
    obs, _ = env.step("click[Back to Search]")
    assert obs.endswith("[Search]")


def test_webshop_snapshot_restore_in_fresh_env():
    env = shop(2)
    plan = env.expert_actions()
    env.step(plan[0])
    env.step("garbage")
    env.step(plan[1])
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    fresh = REGISTRY["webshop"].factory(split="train", data_dir=FIXTURE)
    fresh.restore(snap)
    assert fresh.turns == env.turns and fresh.available_actions() == env.available_actions()
    for action in ["click[Features]", "click[< Prev]", *plan[2:]]:
        assert env.step(action) == fresh.step(action)
        assert (env.progress, env.success, env.done) == (fresh.progress, fresh.success, fresh.done)
    assert fresh.success


def test_webshop_search_ranks_by_bm25():
    cat = shop().catalogue
    assert cat.search("noise cancelling headphones")[0] == "B000TEST04"
    assert cat.search("stainless steel water bottle")[0] == "B000TEST05"
    assert cat.search("zzzz") == [] and len(cat.search("free")) <= ws.MAX_RESULTS


# -- alfworld -----------------------------------------------------------------------------------------
def test_alfworld_registered():
    spec = REGISTRY["alfworld"]
    assert spec.env_type == "embodied" and spec.role == "held_in"


def test_alfworld_missing_data(monkeypatch, tmp_path):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="alfworld-download.*ALFWORLD_DATA"):
        make("alfworld", seed=0)
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no game.tw-pddl files"):
        make("alfworld", seed=0, data_dir=tmp_path)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="valid_unseen"):
        make("alfworld", seed=0, split="test")


def test_alfworld_finds_games_and_needs_the_pddl_engine(tmp_path):
    for split, trial in [("train", "pick_and_place_simple-Apple-None-Fridge-1/trial_T1"),
                         ("train", "look_at_obj_in_light-Book-None-DeskLamp-2/trial_T2"),
                         ("valid_unseen", "pick_clean_then_place_in_recep-Cup-None-Shelf-3/trial_T3")]:
        folder = tmp_path / "json_2.1.1" / split / trial
        folder.mkdir(parents=True)
        (folder / "game.tw-pddl").write_text(json.dumps({"solvable": True}))
    assert len(alf.find_games("train", tmp_path)) == 2 and len(alf.find_games("test", tmp_path)) == 1
    from textworld.envs.pddl.pddl import fast_downward_missing

    if fast_downward_missing:  # the engine is an optional, source-built dependency
        with pytest.raises(ImportError, match=r"textworld\[pddl\]"):
            make("alfworld", seed=0, data_dir=tmp_path)


def test_alfworld_demangle():
    ids = ["Apple_bar__minus_00_dot_47_bar__plus_00_dot_90", "Apple_bar__minus_01_dot_00_bar__plus_00_dot_10",
           "Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00", "agent1", "Kitchen"]
    names = alf.demangle(ids)
    assert names[ids[0]] == "apple 1" and names[ids[1]] == "apple 2" and names[ids[2]] == "fridge 1"
    assert names["agent1"] == "agent1" and names["Kitchen"] == "kitchen"
