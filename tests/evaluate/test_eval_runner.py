"""The eval runner: every episode exactly once, resumable after a kill, the same rows with any worker count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentrm_jax.evaluate import plan_episodes, read_rows, run_eval
from agentrm_jax.records import RecordError

from eval_helpers import by_key, small_config

REPO = Path(__file__).resolve().parents[2]


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_rows_follow_the_eval_row_schema(reference_rows, tmp_path):
    cfg = small_config(tmp_path / "unused.jsonl")
    assert set(reference_rows) == {ep.key for ep in plan_episodes(cfg)}
    for row in reference_rows.values():
        for field in ("env", "seed", "method", "params", "trajectory", "success", "progress", "score", "costs",
                      "rm", "split", "policy", "baselines", "key"):
            assert field in row, field
        assert row["split"] == "test" and row["policy"] == "expert(noise=0.5,seed=0)"
        assert (row["rm"] is None) == (row["method"] == "greedy")  # greedy uses no RM
        assert row["trajectory"]["steps"], row["key"]
    bon = [r for r in reference_rows.values() if r["method"] == "best_of_n"]
    assert all(r["params"]["n"] == 2 and "oracle_pass" in r["baselines"] for r in bon)


def test_a_finished_run_is_not_played_again(tmp_path, reference_rows, monkeypatch):
    out = tmp_path / "rows.jsonl"
    cfg = small_config(out)
    run_eval(cfg, progress=False)
    before = out.read_bytes()
    import agentrm_jax.evaluate.runner as runner

    def fail(*args, **kwargs):
        raise AssertionError("an episode was played again")

    monkeypatch.setattr(runner.EpisodeRunner, "run", fail)
    run_eval(cfg, progress=False)
    assert out.read_bytes() == before
    assert by_key(read_rows(out)) == reference_rows


def test_greedy_rows_are_shared_between_rms(tmp_path):
    out = tmp_path / "rows.jsonl"
    run_eval(small_config(out, envs=("maze",), seeds=2), progress=False)
    run_eval(small_config(out, envs=("maze",), seeds=2, rm="random:3"), progress=False)
    rows = read_rows(out)
    methods = [r["method"] for r in rows]
    assert methods.count("greedy") == 2  # not replayed for the second RM
    assert methods.count("best_of_n") == 4 and methods.count("beam") == 4
    assert {r["rm"] for r in rows if r["method"] != "greedy"} == {"oracle", "random:3"}


def test_torn_last_line_is_cut_and_the_episode_replayed(tmp_path, reference_rows):
    out = tmp_path / "rows.jsonl"
    cfg = small_config(out)
    run_eval(cfg, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # a kill in the middle of the last write
    out.write_bytes(b"".join(lines[:-1]) + torn)
    assert len(read_rows(out)) == len(lines) - 1  # reading alone drops it
    run_eval(cfg, progress=False)
    data = out.read_bytes()
    assert data.endswith(b"\n") and torn not in data.splitlines(keepends=True)
    assert by_key(read_rows(out)) == reference_rows


def test_a_complete_last_line_missing_its_newline_is_kept(tmp_path, reference_rows):
    out = tmp_path / "rows.jsonl"
    cfg = small_config(out)
    run_eval(cfg, progress=False)
    out.write_bytes(out.read_bytes().rstrip(b"\n"))
    run_eval(cfg, progress=False)
    assert by_key(read_rows(out)) == reference_rows and out.read_bytes().endswith(b"}\n")


def test_a_corrupt_middle_line_is_an_error_naming_file_and_line(tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text('{"key": "a"}\n{"key": oops\n{"key": "c"}\n')
    with pytest.raises(RecordError, match=rf"{out}:2"):
        run_eval(small_config(out), progress=False)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_and_kill(cfg, tmp_path, after_rows: int) -> list[int]:
    """Run `agentrm eval` on `cfg` in a subprocess, SIGKILL it once `after_rows` rows are written; its children."""
    config_path = tmp_path / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "agentrm_jax.cli", "eval", "--config", str(config_path),
                             "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _count_lines(Path(cfg.output)) < after_rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    children = _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    return children


def test_killed_run_resumes_with_every_episode_exactly_once(tmp_path, reference_rows):
    out = tmp_path / "rows.jsonl"
    cfg = small_config(out)
    _start_and_kill(cfg, tmp_path, after_rows=3)
    total = len(reference_rows)
    written = len(read_rows(out))
    assert 3 <= written < total, f"the kill came too late to test a resume ({written} of {total} rows)"
    run_eval(cfg, progress=False)
    rows = read_rows(out)
    assert len(rows) == total  # every episode once: no duplicates, none lost
    assert by_key(rows) == reference_rows


def test_two_workers_write_the_same_rows_as_one(tmp_path, reference_rows):
    out = tmp_path / "rows.jsonl"
    run_eval(small_config(out, workers=2), progress=False)
    assert by_key(read_rows(out)) == reference_rows


def test_objects_cannot_go_to_workers(tmp_path):
    from agentrm_jax.search import OracleScorer

    with pytest.raises(ValueError, match="workers=1"):
        run_eval(small_config(tmp_path / "x.jsonl", workers=2), rm=OracleScorer(), progress=False)


def test_a_given_rm_object_is_used(tmp_path):
    class Constant:
        def __init__(self):
            self.calls = 0

        def score(self, trajectories):
            self.calls += 1
            return [0.0] * len(trajectories)

    rm = Constant()
    out = tmp_path / "rows.jsonl"
    run_eval(small_config(out, envs=("maze",), seeds=1, rm="explicit:constant"), rm=rm, progress=False)
    rows = read_rows(out)
    assert rm.calls > 0 and {r["rm"] for r in rows if r["method"] != "greedy"} == {"explicit:constant"}
    bon = next(r for r in rows if r["method"] == "best_of_n")
    assert bon["candidate_scores"] == [0.0, 0.0] and bon["score"] == 0.0


def test_killed_pool_leaves_no_workers_and_resumes(tmp_path, reference_rows):
    out = tmp_path / "rows.jsonl"
    cfg = small_config(out, workers=2)
    children = _start_and_kill(cfg, tmp_path, after_rows=4)
    assert len(children) >= 2  # the two workers (and multiprocessing's resource tracker)
    deadline = time.monotonic() + 20
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "workers outlived their killed parent"
    run_eval(cfg, progress=False)
    assert by_key(read_rows(out)) == reference_rows
