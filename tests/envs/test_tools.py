"""The tool-use envs (`tools`, `tool_query`, `tool_operation`): parser, calculator, tasks, snapshots."""

from __future__ import annotations

import pickle
import random

import pytest

import agentrm_jax.envs.tools as tools_mod
from agentrm_jax.envs.base import REGISTRY, make

NAMES = ("tools", "tool_query", "tool_operation")
SEEDS = range(6)
SPLITS = ("train", "test")
GARBAGE = ["", "hello", "search(", "lookup()", "answer(", "view(((", 'add_row(title="x"', "update(1, 2, 3, 4)",
           "delete()", "calculate(import os)", "calculate(2 ** 99999)", "calculate(1/0)", "zap()", "search(zzz=1)",
           'lookup("E99")', "answer()", "\u2603(\u2603)", "x" * 500, "update(id=T01)", "add_row(1, 2)",
           "search(age=old)", 'calculate("__import__(1)")', "lookup(E01, E02)"]


def _random_action(env, rng: random.Random) -> str:
    kind = env.task["kind"]
    rows = env.task["rows"]
    rid = rng.choice(sorted(rows) + ["Z00"])
    field = rng.choice(list(env.task["types"]) + ["bogus"])
    value = rng.choice(["done", "high", 5, "Aisle 2", "Sales", 30, "x"])
    if kind == "query":
        calls = [f"search({field}={value!r})", f"lookup({rid!r})", f"calculate('{rng.randint(0, 99)} * 3')",
                 f"answer({value!r})", f"search({rows[rid][env.task['key']]!r})" if rid in rows else "search()"]
    else:
        calls = ["view()", f"delete({rid})", f"update({rid}, {field}, {value!r})",
                 "add_row(" + ", ".join(f"{f}={value!r}" for f in env.task["types"]) + ")"]
    pool = calls + GARBAGE + env.expert_actions()
    return rng.choice(pool)


def test_registered():
    for name in NAMES:
        spec = REGISTRY[name]
        assert spec.env_type == "tool" and spec.role == "held_out" and spec.source == "ours"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_expert_solves(name, split, seed):
    env = make(name, seed=seed, split=split)
    expert = env.expert_actions()
    assert 1 <= len(expert) <= 4
    for action in expert:
        assert not env.done
        env.step(action)
    assert env.done and env.success and env.progress == 1.0


def test_kind_is_fixed_or_by_seed():
    assert {make("tool_query", seed=s).task["kind"] for s in range(8)} == {"query"}
    assert {make("tool_operation", seed=s).task["kind"] for s in range(8)} == {"operation"}
    assert {make("tools", seed=s).task["kind"] for s in range(16)} == {"query", "operation"}
    assert {make("tools", seed=s, kind="operation").task["kind"] for s in range(4)} == {"operation"}
    with pytest.raises(ValueError):
        make("tools", kind="weird")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_play_is_well_formed(name, split, seed):
    rng = random.Random(seed * 7 + len(name))
    env = make(name, seed=seed, split=split, max_turns=15)
    progress, done = [env.progress], False
    while not done:
        observation, done = env.step(_random_action(env, rng))
        assert isinstance(observation, str) and observation
        progress.append(env.progress)
        assert env.turns <= 15
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert all(a <= b for a, b in zip(progress, progress[1:]))
    assert env.success == (progress[-1] == 1.0)


@pytest.mark.parametrize("name", ["tool_query", "tool_operation"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_snapshot_restore(name, seed):
    rng = random.Random(seed)
    env = make(name, seed=seed, split="test", max_turns=30)
    expert = env.expert_actions()
    env.step(expert[0])
    env.step(_random_action(env, rng))
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    future = [_random_action(env, rng) for _ in range(6)] + expert
    fresh = type(env)(split="test", max_turns=30)
    fresh.restore(snap)
    assert (fresh.turns, fresh.progress, fresh.done) == (env.turns, env.progress, env.done)
    for action in future:
        assert env.step(action) == fresh.step(action)
        assert (env.progress, env.success, env.turns) == (fresh.progress, fresh.success, fresh.turns)


def test_snapshot_is_not_aliased():
    env = make("tool_operation", seed=3)
    snap = env.snapshot()
    for action in env.expert_actions():
        env.step(action)
    env.restore(snap)
    assert env.turns == 0 and not env.success and env.progress == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_task_and_splits_disjoint(name):
    train = [make(name, seed=s, split="train").instruction for s in range(15)]
    test = [make(name, seed=s, split="test").instruction for s in range(15)]
    assert train == [make(name, seed=s, split="train").instruction for s in range(15)]
    assert not set(train) & set(test)


def test_bad_calls_are_informative_and_count():
    env = make("tool_query", seed=0)
    for i, action in enumerate(["what now?", "fetch(1)", "lookup(Q42)"], start=1):
        observation, done = env.step(action)
        assert observation.startswith("Error:") and "Available tools:" in observation and "lookup(id)" in observation
        assert env.turns == i and not done


def test_wrong_answer_ends_episode_without_success():
    env = make("tool_query", seed=0)
    observation, done = env.step('answer("definitely not it")')
    assert done and not env.success and "incorrect" in observation and env.progress < 1.0


def test_operation_collateral_damage_blocks_success():
    env = make("tool_operation", seed=2)
    victim = next(rid for rid in sorted(env.task["rows"]) if rid in env.task["target"]
                  and env.task["target"][rid] == env.task["rows"][rid])
    env.step(f"delete({victim})")
    for action in env.expert_actions():
        env.step(action)
    assert not env.success and env.progress < 1.0


@pytest.mark.parametrize("text,expected", [
    ('search(city="Oslo")', ("search", [], {"city": "Oslo"})),
    ("Action: lookup('E03')", ("lookup", ["E03"], {})),
    ("update(T01, status, done)", ("update", ["T01", "status", "done"], {})),
    ('add_row(title="Fix, then test", quantity=5)', ("add_row", [], {"title": "Fix, then test", "quantity": 5})),
    ("calculate((3 + 4) * 2)", ("calculate", ["(3 + 4) * 2"], {})),
    ("view()", ("view", [], {})),
    ('answer("it\'s 4.5")', ("answer", ["it's 4.5"], {})),
])
def test_parse_call(text, expected):
    name, args, kwargs, _ = tools_mod.parse_call(text, ("search", "lookup", "update", "add_row", "calculate", "view",
                                                        "answer"))
    assert (name, args, kwargs) == expected


def test_parse_call_rejects_text_without_call():
    with pytest.raises(tools_mod.CallError):
        tools_mod.parse_call("no call here")


@pytest.mark.parametrize("expression,value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("52,000 - 7,000", 45000), ("-4 / 8", -0.5), ("2 ^ 10", 1024),
    ("$120 + 5", 125), ("7 // 2 + 7 % 2", 4),
])
def test_safe_calculate(expression, value):
    assert tools_mod.safe_calculate(expression) == pytest.approx(value)


@pytest.mark.parametrize("expression", ["__import__('os')", "1/0", "abs(-1)", "x + 1", "9 ** 9 ** 9", "", "[1]"])
def test_safe_calculate_rejects(expression):
    with pytest.raises(ValueError):
        tools_mod.safe_calculate(expression)


@pytest.mark.parametrize("given,expected,ok", [
    ("52,000", 52000, True), ("$52000.", 52000, True), ("The answer is 3", 3, True), ("3 or 4", 3, False),
    ("'Fantasy'", "Fantasy", True), ("It is fantasy.", "Fantasy", True), ("Oslo", "Osaka", False),
])
def test_answer_matches(given, expected, ok):
    assert tools_mod.answer_matches(given, expected) is ok
