"""Tests for the paraphrased held-in envs (`twx_paraphrased`, `shop_paraphrased`, `sciworld_paraphrased`).

twx and sciworld run their Java simulators (one JVM per process, shared with the other env tests)."""

from __future__ import annotations

import pickle
import random

import pytest

from agentrm_jax.agents.factory import make_policy
from agentrm_jax.agents.loop import run_episode
from agentrm_jax.agents.prompts import ONE_SHOT, build_messages, example_messages
from agentrm_jax.envs.base import REGISTRY, make
from agentrm_jax.envs.paraphrase import PARAPHRASED, SUFFIX, WORDINGS, ParaphrasedEnv, Wording, to_agent, to_env
from agentrm_jax.records import Trajectory

FAMILIES = ("shop", "twx", "sciworld")
TEST_SEEDS = range(10)
GARBAGE = ["", "xyzzy", "\n\t", "0", "take", "select[]", "find[]", "click", "pick up", "transfer to",
           "concentrate on the moon", "place everything everywhere", "survey"]


def _first_changed(table, plan: list[str]) -> int:
    """Index of the first action of `plan` (env wording) that the table rewords."""
    return next(i for i, a in enumerate(plan) if table.to_agent(a) != a)


# ------------------------------------------------------------------------------ the tables (pure)

def test_registered_like_the_originals():
    assert set(PARAPHRASED) == {f"{f}{SUFFIX}" for f in FAMILIES}
    for family in FAMILIES:
        spec, base = REGISTRY[f"{family}{SUFFIX}"], REGISTRY[family]
        assert spec.role == "held_in" and spec.env_type == base.env_type and spec.source == base.source
        assert "robustness" in spec.stands_for and base.stands_for in spec.stands_for


@pytest.mark.parametrize("family", FAMILIES)
def test_worked_example_round_trips_and_old_wording_is_not_accepted(family):
    table = WORDINGS[family]
    _, steps = ONE_SHOT[family]
    reworded = 0
    for _, action, _ in steps:
        new = table.to_agent(action)
        assert table.to_env(new) == action and table.accepts(new)
        if new != action:
            reworded += 1
            assert not table.accepts(action)
    assert reworded >= 1


def test_each_wording_by_hand():
    cases = {
        "twx": [("take cookbook", "pick up cookbook"), ("put notebook in side table", "place notebook in side table"),
                ("put wet towel on towel rack", "place wet towel on towel rack"),
                ("cook pork chop in toaster", "cook pork chop using toaster"), ("open fridge", "open fridge")],
        "shop": [("click[Buy Now]", "select[Purchase]"), ("click[B07X]", "select[B07X]"),
                 ("search[vegan shampoo, 32 fl oz]", "find[vegan shampoo, 32 fl oz]"),
                 ("click[< Prev]", "select[< Prev]")],
        "sciworld": [("pick up crocodile", "take crocodile"), ("focus on egg parrot", "concentrate on egg parrot"),
                     ("move door to kitchen to inventory", "transfer door to kitchen to inventory"),
                     ("look around", "survey the room"), ("go to hallway", "go to hallway"), ("wait1", "wait1")],
    }
    for family, pairs in cases.items():
        for original, paraphrase in pairs:
            assert to_agent(family, original) == paraphrase
            assert to_env(family, paraphrase) == original
            assert to_env(family, paraphrase.upper()).lower() == original.lower()  # wording is case-blind
            assert WORDINGS[family].accepts(paraphrase.capitalize())


def test_unknown_wording_passes_through_and_mixes_are_not_accepted():
    for family in FAMILIES:
        for text in ("xyzzy", "dance wildly", "", "look at fridge"):
            assert to_env(family, text) == text
    shop = WORDINGS["shop"]
    assert shop.to_env("select[Buy Now]") == "click[Buy Now]" and not shop.accepts("select[Buy Now]")
    assert shop.accepts("find[buy now]") and shop.to_env("find[buy now]") == "search[buy now]"  # a query is data


def test_texts_are_reworded_in_place():
    sw = WORDINGS["sciworld"]
    assert sw.to_agent("Your task is to find a(n) animal. First, focus on the thing. Then, move it to the blue box. "
                       "Focus on the animal with the longest life span. You move to the hallway.") == (
        "Your task is to find a(n) animal. First, concentrate on the thing. Then, transfer it to the blue box. "
        "Concentrate on the animal with the longest life span. You move to the hallway.")
    assert WORDINGS["twx"].to_agent("Valid actions: cook banana in oven, take knife, put knife in fridge.") == (
        "Valid actions: cook banana using oven, pick up knife, place knife in fridge.")
    assert WORDINGS["shop"].to_agent("[Features]\n[Buy Now]\nActions: search[your query] on this page; then "
                                     "click[X] for any button [X] a page shows.") == (
        "[Features]\n[Purchase]\nActions: find[your query] on this page; then select[X] for any button [X] a "
        "page shows.")


def test_a_wording_needs_the_same_slots_on_both_sides():
    with pytest.raises(ValueError, match="slots differ"):
        Wording("put {OBJ} in {PLACE}", "place {OBJ}")
    with pytest.raises(ValueError, match="no wording table"):
        ParaphrasedEnv(object(), "maze")


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_shows_the_paraphrased_example(family):
    table, name = WORDINGS[family], f"{family}{SUFFIX}"
    original = "\n".join(m["content"] for m in example_messages(family))
    reworded = "\n".join(m["content"] for m in example_messages(name))
    assert reworded != original and table.note() in reworded and table.note() not in original
    for _, action, _ in ONE_SHOT[family][1]:
        assert f"Action: {table.to_agent(action)}" in reworded
        if table.to_agent(action) != action:
            assert f"Action: {action}\n" not in reworded + "\n"
    messages = build_messages(Trajectory(task=name, instruction="the task"))
    assert table.note() in "\n".join(m["content"] for m in messages)


# ------------------------------------------------------------------------------ the envs

@pytest.mark.parametrize("family", FAMILIES)
def test_same_tasks_turn_limits_and_the_note(family):
    table = WORDINGS[family]
    original = make(family, seed=3, split="test")
    para = make(f"{family}{SUFFIX}", seed=3, split="test")
    assert para.max_turns == original.max_turns and para.split == "test" and para.name == f"{family}{SUFFIX}"
    assert make(f"{family}{SUFFIX}", seed=0, max_turns=7).max_turns == 7
    for seed in (3, 4):
        first, theirs = para.reset(seed), original.reset(seed)
        assert para.instruction == f"{table.to_agent(original.instruction)} {table.note()}"
        if family == "sciworld":  # ScienceWorld may lay a room out anew on each reset: same task, other contents
            assert (para.inner.task_name, para.inner.variation) == (original.task_name, original.variation)
            assert first.startswith(para.instruction.removesuffix(table.note()).strip())
            assert first.endswith(f"\n\n{table.note()}")
        else:
            assert first == f"{table.to_agent(theirs)}\n\n{table.note()}"
    assert make(f"{family}{SUFFIX}", seed=0, split="train").reset(0) != para.reset(0)


@pytest.mark.parametrize("family", FAMILIES)
def test_expert_plays_the_paraphrase_and_succeeds_where_the_original_does(family):
    table = WORDINGS[family]
    original = make(family, seed=0, split="test")
    para = make(f"{family}{SUFFIX}", seed=0, split="test")
    reworded = 0
    for seed in TEST_SEEDS:
        base = run_episode(original, make_policy("expert", original), seed=seed)
        para.reset(seed)
        plan = para.inner.expert_actions()  # sciworld's gold path may differ between simulator objects
        episode = run_episode(para, make_policy("expert", para), seed=seed)
        actions = [s.action for s in episode.steps]
        assert base.success and base.progress == 1.0
        assert episode.success == base.success and episode.progress == 1.0
        assert [table.to_env(a) for a in actions] == plan[:len(actions)]
        assert all(table.accepts(a) for a in actions)
        assert all(not s.observation.startswith("Nothing happens") for s in episode.steps)
        reworded += sum(a != table.to_env(a) for a in actions)
        if family != "sciworld":
            assert actions == [table.to_agent(s.action) for s in base.steps]
    assert reworded >= len(TEST_SEEDS)  # every episode used the new wording at least once on average


@pytest.mark.parametrize("family", FAMILIES)
def test_available_actions_round_trip(family):
    table = WORDINGS[family]
    original = make(family, seed=1, split="test")
    para = make(f"{family}{SUFFIX}", seed=1, split="test")
    plan = original.expert_actions()
    checked = 0
    for action in plan[:3]:
        mine, theirs = para.available_actions(), original.available_actions()
        if theirs is not None:
            assert mine == [table.to_agent(a) for a in theirs]
            for a, b in zip(theirs, mine):
                assert table.to_env(b) == a and table.accepts(b) and (a == b or not table.accepts(a))
            checked += len(theirs)
        else:
            assert mine is None
        original.step(action)
        para.step(table.to_agent(action))
    assert checked > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_old_wording_is_refused_like_any_invalid_action(family):
    table = WORDINGS[family]
    original = make(family, seed=2, split="test")
    para = make(f"{family}{SUFFIX}", seed=2, split="test")
    plan = para.inner.expert_actions()
    i = _first_changed(table, plan)
    for action in plan[:i]:
        para.step(table.to_agent(action))
        original.step(action)
    old, new = plan[i], table.to_agent(plan[i])
    turns, progress = para.turns, para.progress
    answer, done = para.step(old)
    assert answer.startswith(f"Nothing happens: {old!r} is not a valid action") and not done
    assert para.turns == turns + 1 and para.progress == progress
    rest = answer.split(" is not a valid action", 1)[1]
    assert table.to_agent(rest) == rest  # the valid actions it lists are in the new wording
    garbage, _ = para.step("xyzzy")
    assert garbage.startswith("Nothing happens: 'xyzzy' is not a valid action")
    answer, _ = para.step(new)
    assert not answer.startswith("Nothing happens")
    answer, _ = original.step(old)
    assert not answer.startswith("Nothing happens")  # the original env takes the old wording


@pytest.mark.parametrize("family", FAMILIES)
def test_snapshot_restore_through_the_wrapper(family):
    table = WORDINGS[family]
    env = make(f"{family}{SUFFIX}", seed=5, split="test")
    plan = [table.to_agent(a) for a in env.inner.expert_actions()]
    k = max(1, len(plan) // 2)
    for action in plan[:k]:
        env.step(action)
    env.step(next(table.to_env(a) for a in plan if table.to_env(a) != a))  # refused old wording: a turn too
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    fresh = make(f"{family}{SUFFIX}", seed=0, split="test")
    fresh.restore(snap)
    assert (fresh.turns, fresh.progress, fresh.done) == (env.turns, env.progress, env.done)
    for action in plan[k:]:
        assert fresh.step(action) == env.step(action)
    assert fresh.success and env.success and fresh.progress == 1.0


@pytest.mark.parametrize("family", FAMILIES)
def test_random_play_never_raises_and_progress_is_monotone(family):
    table = WORDINGS[family]
    env = make(f"{family}{SUFFIX}", seed=0, split="test", max_turns=12)
    for seed in (6, 7):
        rng = random.Random(f"paraphrase/{family}/{seed}")
        env.reset(seed)
        plan = env.inner.expert_actions()
        start = env.available_actions() or []  # sciworld's take ~1 s: read once per episode
        pool = [table.to_agent(a) for a in plan] + plan + GARBAGE + rng.sample(start, min(20, len(start)))
        last = env.progress
        while not env.done:
            observation, done = env.step(rng.choice(pool))
            assert isinstance(observation, str) and observation
            assert 0.0 <= last <= env.progress <= 1.0
            last = env.progress
            assert env.turns <= 12 and done == env.done
        assert env.step("pick up anything") == ("The episode is over.", True)
