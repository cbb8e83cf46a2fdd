"""Expert demonstrations: every family's demo succeeds with thoughts read from the env's state; noisy
demos deviate only where the expert recovers; collection resumes without duplicates or overwrites."""

from __future__ import annotations

import json
import re

import pytest

from agentrm_jax.agents.collect import collect, episode_id, expert_episode
from agentrm_jax.agents.seeds import parse_seeds
from agentrm_jax.agents.factory import make_env
from agentrm_jax.cli import main
from agentrm_jax.records import RecordError, read_jsonl

FAMILIES = ["maze", "shop", "pddl", "babyai", "tool_query", "tool_operation", "textworld", "twx", "sciworld"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_a_successful_demo_with_a_thought_per_step(name):
    env = make_env(name, split="train")
    demo = expert_episode(env, 1)
    assert demo.success and demo.progress == 1.0
    assert demo.id == f"{name}/train/1" and demo.meta["noisy_steps"] == []
    assert [s.action for s in demo.steps] == env.expert_actions()[:len(demo.steps)]  # it stops at success
    for step in demo.steps:
        assert len(step.thought.split()) >= 5, step  # a sentence, not a label
        assert step.thought.rstrip().endswith("."), step


def test_maze_thoughts_restate_the_observation():
    env = make_env("maze", split="train")
    demo = expert_episode(env, 4)
    observations = [demo.instruction] + [s.observation for s in demo.steps]
    for before, step in zip(observations, demo.steps):
        at = re.search(r"You are at (\(\d+, \d+\))", before).group(1)
        open_ways = [d.lower() for d, what in re.findall(r"(North|South|East|West): (open|the goal)", before)]
        assert step.thought.startswith(f"I am at {at} ")
        assert f"Open: {', '.join(open_ways)}." in step.thought
        assert step.thought.endswith(f"so I {step.action}.")


@pytest.mark.parametrize("name", ["maze", "shop", "pddl", "textworld"])
def test_noisy_demos_deviate_and_recover(name):
    env, probe = make_env(name, split="train"), make_env(name, split="train")
    demos = [expert_episode(env, s, noise=0.5, rng_seed=1, probe=probe) for s in range(6)]
    noisy = [(d, i) for d in demos for i in d.meta["noisy_steps"]]
    assert noisy, "noise 0.5 over six episodes took no deviation"
    assert all(d.success for d in demos)
    for demo, i in noisy:
        assert demo.steps[i].thought == f"I try {demo.steps[i].action}."
        assert i + 1 < len(demo.steps) and demo.steps[i + 1].thought.startswith("That did not get me closer")
        assert demo.id.endswith("/noise0.5-1")


def test_collect_resumes_without_duplicates_and_repairs_a_torn_line(tmp_path):
    out = tmp_path / "demos.jsonl"
    first = collect(["maze", "pddl"], seeds=range(3), out=out, progress=False)
    assert (first.written, first.skipped) == (6, 0)
    text = out.read_text()
    out.write_text(text + text.splitlines()[0][:40])  # a write cut short by a kill
    again = collect(["maze", "pddl"], seeds=range(5), out=out, progress=False)
    assert (again.written, again.skipped, again.failed) == (4, 6, 0)
    ids = [t.id for t in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 10
    noisy = collect(["maze"], seeds=range(2), out=out, noise=0.3, progress=False)  # other ids: same file is fine
    assert noisy.written == 2 and episode_id("maze", "train", 0, 0.3, 0) in {t.id for t in read_jsonl(out)}


def test_collect_refuses_a_record_of_its_id_made_otherwise(tmp_path):
    out = tmp_path / "demos.jsonl"
    collect(["maze"], seeds=[0], out=out, progress=False)
    row = json.loads(out.read_text())
    row["meta"]["collect"]["policy"] = "someone else"
    out.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"demos.jsonl:2: maze/train/0 was collected with"):
        collect(["maze"], seeds=[0], out=out, progress=False)
    assert json.loads(out.read_text().strip())["meta"]["collect"]["policy"] == "someone else"  # left as it was
    out.write_text('{"not": "a trajectory"}\n')
    with pytest.raises(RecordError, match=r"demos.jsonl:1: .*trajectories to resume"):
        collect(["maze"], seeds=[0], out=out, progress=False)


def test_a_resume_under_another_turn_limit_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "demos.jsonl"
    first = collect(["maze"], seeds=range(2), out=out, progress=False, max_turns=3)  # cut short
    assert first.failed == 2 and all(t.meta["collect"]["max_turns"] == 3 and len(t.steps) == 3 for t in read_jsonl(out))
    before = out.read_text()
    assert main(["collect", "--envs", "maze", "--seeds", "0-2", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "demos.jsonl:1: maze/train/0 was collected with max_turns=3, but this run has " \
        "max_turns=30" in err
    assert out.read_text() == before  # nothing appended under the other limit
    # the limit in effect is what counts: --max-turns above the env's own (30) is the env's own
    default = tmp_path / "default.jsonl"
    collect(["maze"], seeds=range(2), out=default, progress=False)
    again = collect(["maze"], seeds=range(3), out=default, progress=False, max_turns=50)
    assert (again.written, again.skipped) == (1, 2)
    with pytest.raises(ValueError, match=r"--max-turns must be an integer >= 1, got 0"):
        collect(["maze"], seeds=[0], out=default, progress=False, max_turns=0)


def test_a_record_from_before_turn_limits_were_recorded_is_refused(tmp_path):
    out = tmp_path / "demos.jsonl"
    collect(["maze"], seeds=[0], out=out, progress=False)
    row = json.loads(out.read_text())
    del row["meta"]["collect"]["max_turns"]
    out.write_text(json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"demos.jsonl:1: maze/train/0 was collected with max_turns=unrecorded, "
                                          r"but this run has max_turns=30"):
        collect(["maze"], seeds=[0], out=out, progress=False)


def test_parse_seeds_one_parser_for_collect_and_explore():
    from agentrm_jax.explore.config import ExploreConfig

    import agentrm_jax.explore.config as explore_config

    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7) and parse_seeds([9, "0-1"]) == (9, 0, 1)
    assert parse_seeds(3) == (0, 1, 2)  # a YAML count
    for bad, why in [("", "at least one"), ("a", "a range like 0-99"), ("5-2", "a range like"), ("-1", "a range"),
                     ("0-3,2", "name task 2 twice"), (0, "as a count must be >= 1")]:
        with pytest.raises(ValueError, match=f"^--seeds .*{why}") as err:
            parse_seeds(bad, what="--seeds")
        assert "\n" not in str(err.value)
    assert explore_config.parse_seeds is parse_seeds  # explore parses with the same function
    with pytest.raises(ValueError, match=r"^seeds name task 2 twice") as err:
        ExploreConfig(env="maze", seeds="0-3,2")
    assert err.value.field == "seeds"  # an ExploreConfigError, so YAML errors point at the key's line


def test_collect_names_bad_seeds_in_one_line(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert main(["collect", "--envs", "maze", "--seeds", "0-3,2", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds name task 2 twice: '0-3,2'" in err and not out.exists()


def test_collect_command(tmp_path, capsys):
    out = tmp_path / "d.jsonl"
    assert main(["collect", "--envs", "maze", "tool_query", "--seeds", "0-1", "--out", str(out), "--no-progress"]) == 0
    assert "wrote 4 episodes" in capsys.readouterr().err
    assert main(["collect", "--envs", "mazee", "--seeds", "0", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown environment 'mazee'" in err and "did you mean 'maze'" in err
    assert main(["collect", "--policy", "random", "--envs", "maze", "--out", str(out)]) == 2
    assert "--policy expert" in capsys.readouterr().err
