"""`agentrm explore`: the trees file, resume after SIGKILL, refusals, workers, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from explore_helpers import CoinEnv, CoinPolicy, MumblePolicy

from agentrm_jax.cli import main
from agentrm_jax.explore.config import ExploreConfig, parse_seeds
from agentrm_jax.explore.runner import read_trees, read_trees_file, run_explore

REPO = Path(__file__).resolve().parents[2]
MAZE = ["--env", "maze", "--policy", "expert", "--noise", "0.5", "--k", "3", "--rollouts", "2", "--max-turns", "12",
        "--no-progress"]


def lines(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [e for e in err if "error:" in e]
    assert len(errors) == 1, err
    return errors[0]


def test_trees_file_has_a_header_and_one_tree_per_seed(tmp_path, capsys):
    out = tmp_path / "trees.jsonl"
    assert main(["explore", *MAZE, "--seeds", "0-2,5", "--simulations", "4", "--out", str(out)]) == 0
    rows = lines(out)
    assert rows[0]["kind"] == "agentrm.explore/trees" and rows[0]["config"]["simulations"] == 4
    assert sorted(r["seed"] for r in rows[1:]) == [0, 1, 2, 5]
    node = rows[1]["nodes"][1]
    for key in ("id", "parent", "thought", "action", "observation", "visits", "value_sum", "terminal", "outcome",
                "rollouts"):
        assert key in node
    assert all(r["fingerprint"] == rows[0]["fingerprint"] for r in rows[1:])
    # a rerun writes nothing new
    assert main(["explore", *MAZE, "--seeds", "0-2,5", "--simulations", "4", "--out", str(out)]) == 0
    assert len(lines(out)) == 5
    assert "0 new, 4 already there" in capsys.readouterr().err


def test_sigkill_then_resume_gives_every_tree_exactly_once_and_the_same_trees(tmp_path):
    args = [*MAZE, "--seeds", "0-15", "--simulations", "10", "--batch-trees", "4"]
    killed, whole = tmp_path / "killed.jsonl", tmp_path / "whole.jsonl"
    cmd = [sys.executable, "-m", "agentrm_jax.cli", "explore", *args]
    proc = subprocess.Popen([*cmd, "--out", str(killed)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if killed.exists() and len(killed.read_text().splitlines()) >= 3:  # header + 2 trees
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(lines(killed)) - 1
    assert 2 <= before < 16
    with open(killed, "a") as f:
        f.write('{"key": "maze|train|9", "nod')  # a torn last write
    assert main(["explore", *args, "--out", str(killed)]) == 0
    assert main(["explore", *args, "--out", str(whole)]) == 0
    resumed = lines(killed)[1:]
    keys = [r["key"] for r in resumed]
    assert sorted(keys) == sorted(f"maze|train|{s}" for s in range(16)) and len(set(keys)) == 16
    assert {r["key"]: r for r in resumed} == {r["key"]: r for r in lines(whole)[1:]}


def test_a_trees_file_of_another_config_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "trees.jsonl"
    assert main(["explore", *MAZE, "--seeds", "0-1", "--simulations", "2", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["explore", *MAZE, "--seeds", "0-3", "--simulations", "3", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"{out} holds trees of another explore config (simulations: 2 in the file, 3 now)" in err
    assert out.read_bytes() == before
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "task": "maze", "instruction": "hi"}\n')
    assert main(["explore", *MAZE, "--seeds", "0", "--simulations", "2", "--out", str(other)]) == 2
    assert f"{other}:1: not an explore trees file" in one_line_error(capsys)


@pytest.mark.parametrize("argv, expected", [
    (["--env", "mazee", "--seeds", "0-3"], "unknown environment 'mazee' (did you mean 'maze'?)"),
    (["--env", "maze", "--seeds", "0-3", "--simulations", "0"], "--simulations: simulations must be an integer >= 1"),
    (["--env", "maze", "--seeds", "0-3", "--k", "-1"], "--k: k must be an integer >= 1, got -1"),
    (["--env", "maze", "--seeds", "3-1"], "--seeds: seeds must be a range like 0-99"),
    (["--env", "maze"], "command line: seeds is required"),
    (["--env", "maze", "--seeds", "0", "--policy", "nowhere.gguf"], "--policy: policy must be expert, random"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, expected):
    out = tmp_path / "trees.jsonl"
    assert main(["explore", *argv, "--out", str(out), "--no-progress"]) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()  # nothing written for a bad command


def test_a_policy_without_actions_fails_in_one_line(tmp_path):
    cfg = ExploreConfig(env="coin", seeds=(0,), simulations=2, output=str(tmp_path / "t.jsonl"))
    with pytest.raises(ValueError, match=r"^coin/train/0: the policy returned no parsable action[^\n]*$"):
        run_explore(cfg, policy=MumblePolicy(), factory=CoinEnv, progress=False)


def test_library_run_with_objects_writes_readable_trees(tmp_path):
    cfg = ExploreConfig(env="coin", seeds=(0, 1, 2), simulations=6, k=4, output=str(tmp_path / "t.jsonl"))
    assert run_explore(cfg, policy=CoinPolicy(), factory=CoinEnv, progress=False)["written"] == 3
    trees = read_trees(cfg.output)
    assert [t.seed for t in sorted(trees, key=lambda t: t.seed)] == [0, 1, 2]
    header, rows = read_trees_file(cfg.output)
    assert header["fingerprint"] == cfg.fingerprint() and len(rows) == 3


def test_a_bad_tree_row_is_named_by_its_real_line(tmp_path):
    from agentrm_jax.records import RecordError

    cfg = ExploreConfig(env="coin", seeds=(0, 1), simulations=4, k=2, output=str(tmp_path / "t.jsonl"))
    run_explore(cfg, policy=CoinPolicy(), factory=CoinEnv, progress=False)
    header, first, second = Path(cfg.output).read_text().splitlines()
    broken = json.loads(second)
    broken.pop("nodes")
    Path(cfg.output).write_text("\n".join([header, "", first, "", json.dumps(broken)]) + "\n")  # blank lines
    with pytest.raises(RecordError) as err:
        read_trees(cfg.output)
    assert err.value.line == 5


def test_workers_write_the_same_trees_as_one_process(tmp_path):
    args = [*MAZE, "--seeds", "0-3", "--simulations", "5", "--batch-trees", "2"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(["explore", *args, "--out", str(one)]) == 0
    assert main(["explore", *args, "--workers", "2", "--out", str(two)]) == 0
    assert {r["key"]: r for r in lines(one)[1:]} == {r["key"]: r for r in lines(two)[1:]}
    assert lines(one)[0] == lines(two)[0]  # workers are no part of the tree config


def test_yaml_config_with_flag_overrides_and_file_line_errors(tmp_path):
    cfg = ExploreConfig.from_yaml(REPO / "configs/explore_cpu.yaml", {"seeds": "0-1", "workers": None})
    assert cfg.env == "shop" and cfg.seeds == (0, 1) and cfg.simulations == 16
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: maze\nseeds: 0-3\nrollouts: 0\n")
    with pytest.raises(ValueError, match=r"bad.yaml:3: rollouts must be an integer >= 1, got 0"):
        ExploreConfig.from_yaml(bad)
    bad.write_text("env: maze\nseeds: 0-3\nsimulation: 4\n")
    with pytest.raises(ValueError, match=r"bad.yaml:3: unknown key 'simulation'"):
        ExploreConfig.from_yaml(bad)
    with pytest.raises(ValueError, match=r"^--simulations: simulations must be"):
        ExploreConfig.from_yaml(REPO / "configs/explore_cpu.yaml", {"simulations": 0})
    assert parse_seeds("0-2,7") == (0, 1, 2, 7) and parse_seeds(3) == (0, 1, 2)


def test_the_cpu_config_runs(tmp_path):
    out = tmp_path / "trees.jsonl"
    assert main(["explore", "--config", str(REPO / "configs/explore_cpu.yaml"), "--seeds", "0-1", "--out", str(out),
                 "--no-progress"]) == 0
    assert len(read_trees(out)) == 2


def test_a_finished_file_is_resumed_without_building_the_policy(tmp_path, monkeypatch):
    import agentrm_jax.agents.factory as factory

    cfg = ExploreConfig(env="coin", seeds=(0, 1), simulations=3, policy="bundled", output=str(tmp_path / "t.jsonl"))
    run_explore(cfg, policy=CoinPolicy(), factory=CoinEnv, progress=False)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded although every tree is written")

    monkeypatch.setattr(factory, "make_policy", no_model)
    assert run_explore(cfg, factory=CoinEnv, progress=False) == {"trees": 2, "written": 0, "skipped": 2}
