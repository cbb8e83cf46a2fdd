"""The task split file (configs/tasks/agentrm_split.yaml): parsing, errors with file:line, agreement with the
env registry, and the eval summary taking its held-in / held-out columns from it."""

from __future__ import annotations

import importlib
import inspect

import pytest

import agentrm_jax.envs  # noqa: F401 - registers the envs the package imports
from agentrm_jax.envs.base import REGISTRY
from agentrm_jax.envs.split import DEFAULT_SPLIT, TaskSplit, load_split

# Env modules the package __init__ may not import yet; each registers names the split uses.
for _module in ("agentrm_jax.envs.twx", "agentrm_jax.envs.shop"):
    try:
        importlib.import_module(_module)
    except ImportError:
        pass

GOOD = """\
held_in:
  twx: {task: ALFWorld, avg_turns: 6, max_turns: 30}
held_out:
  maze: {task: Maze, avg_turns: null, max_turns: 30}
seeds:
  train: {start: 0, stop: 5}
  test: {start: 0, stop: 3}
"""


def test_default_split_parses():
    split = load_split()
    assert split == load_split(DEFAULT_SPLIT) and split.source == str(DEFAULT_SPLIT)
    assert split.held_in == ("shop", "twx", "sciworld")
    assert split.held_out == ("babyai", "textworld", "pddl", "maze", "tool_query", "tool_operation")
    assert split.seeds("train") == range(0, 200) and split.seeds("test") == range(0, 20)
    assert {e.task for e in split.entries} == {"WebShop", "ALFWorld", "SciWorld", "BabyAI", "Jericho", "PDDL",
                                              "Maze", "ToolQuery", "ToolOperation"}
    assert split.entry("twx").avg_turns == 6 and split.entry("maze").avg_turns is None
    assert split.role("twx") == "held_in" and split.role("twx_coin") is None
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        split.seeds("dev")


def test_every_named_env_is_registered_and_agrees_with_the_registry():
    split = load_split()
    unknown = [e.env for e in split.entries if e.env not in REGISTRY]
    assert not unknown, f"split names envs nobody registered: {unknown}"
    for entry in split.entries:
        spec = REGISTRY[entry.env]
        assert spec.role == entry.role, (entry.env, spec.role, entry.role)
        assert entry.task.lower() in spec.stands_for.lower().replace(" ", ""), (entry.env, spec.stands_for)
        default = inspect.signature(spec.factory).parameters["max_turns"].default
        assert entry.max_turns == default, f"{entry.env}: split max_turns {entry.max_turns}, env default {default}"
        assert entry.avg_turns is None or entry.max_turns > entry.avg_turns


def test_registered_envs_standing_for_a_split_task_share_its_role():
    split = load_split()
    for spec in REGISTRY.values():
        for entry in split.entries:
            if entry.task.lower() in spec.stands_for.lower().replace(" ", ""):
                assert spec.role == entry.role, (spec.name, spec.stands_for, entry.task, entry.role)


def _write(tmp_path, text):
    path = tmp_path / "split.yaml"
    path.write_text(text)
    return path


def test_a_small_split_parses(tmp_path):
    split = load_split(_write(tmp_path, GOOD))
    assert isinstance(split, TaskSplit) and split.envs == ("twx", "maze")
    assert split.train_seeds == range(5) and split.test_seeds == range(3)


@pytest.mark.parametrize("text, message", [
    (GOOD + "extra: 1\n", r"split.yaml:8: extra: unknown key; known keys: held_in, held_out, seeds"),
    (GOOD.replace("maze:", "twx:"), r"split.yaml:4: held_out.twx: named twice \(also under held_in\)"),
    (GOOD.replace("max_turns: 30}\nheld_out", "max_turns: 6}\nheld_out"),
     r"split.yaml:2: held_in.twx.max_turns: the turn limit 6 must exceed avg_turns 6"),
    (GOOD.replace("avg_turns: null", "avg_turns: many"),
     r"split.yaml:4: held_out.maze.avg_turns: expected a positive number or null, got 'many'"),
    (GOOD.replace("task: Maze, ", ""), r"split.yaml:4: held_out.maze: missing key 'task'"),
    (GOOD.replace("task: Maze,", "task: Maze, turns: 3,"), r"split.yaml:4: held_out.maze.turns: unknown key"),
    (GOOD.replace("test: {start: 0, stop: 3}", "test: {start: 3, stop: 3}"),
     r"split.yaml:7: seeds.test.stop: stop \(3\) must exceed start \(3\)"),
    (GOOD.replace("train: {start: 0,", "train: {start: -1,"),
     r"split.yaml:6: seeds.train.start: expected an integer >= 0, got -1"),
    (GOOD.replace("  train: {start: 0, stop: 5}\n", ""), r"split.yaml:5: seeds: missing key 'train'"),
    (GOOD.replace("held_out:\n  maze: {task: Maze, avg_turns: null, max_turns: 30}\n", "held_out: []\n"),
     r"split.yaml:3: held_out: expected a mapping of env name"),
    ("held_in: [\n", r"split.yaml: invalid YAML"),
])
def test_mistakes_are_one_line_with_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message) as err:
        load_split(_write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such task split file"):
        load_split(tmp_path / "nope.yaml")


MOVED = """\
held_in:
  maze: {task: Maze, avg_turns: null, max_turns: 30}
held_out:
  twx: {task: ALFWorld, avg_turns: 6, max_turns: 30}
seeds:
  train: {start: 0, stop: 5}
  test: {start: 0, stop: 3}
"""


def test_summary_columns_follow_the_split(tmp_path, monkeypatch):
    import agentrm_jax.envs.split as split_module
    from agentrm_jax.evaluate.summary import summarize

    rows = [{"env": env, "seed": 0, "method": "greedy", "success": 1, "progress": 1.0}
            for env in ("maze", "twx", "twx_coin", "somebody_elses")]
    default = summarize(rows)
    assert default.roles == {"maze": "held_out", "twx": "held_in", "twx_coin": "held_out",
                             "somebody_elses": "unknown"}
    assert default.envs[0] == "twx"
    moved = load_split(_write(tmp_path, MOVED))
    for summary in (summarize(rows, split=moved), None):
        if summary is None:  # the default split file is what summarize reads when given none
            monkeypatch.setattr(split_module, "DEFAULT_SPLIT", tmp_path / "split.yaml")
            summary = summarize(rows)
        assert summary.roles["maze"] == "held_in" and summary.roles["twx"] == "held_out"
        assert summary.roles["twx_coin"] == "held_out"  # not in the split: the registry's role
        assert summary.envs[0] == "maze"


def test_with_roles_regroups_the_split_and_keeps_known_limits():
    from agentrm_jax.envs.split import load_split

    base = load_split()
    moved = base.with_roles(("shop", "maze"), ("twx", "my_env"), source="cfg")
    assert moved.held_in == ("shop", "maze") and moved.held_out == ("twx", "my_env")
    assert moved.role("maze") == "held_in" and moved.role("twx") == "held_out" and moved.role("babyai") is None
    assert moved.entry("maze").max_turns == base.entry("maze").max_turns and moved.entry("my_env").task == "my_env"
    assert moved.test_seeds == base.test_seeds and moved.source == "cfg"
