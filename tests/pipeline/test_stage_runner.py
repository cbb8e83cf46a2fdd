"""The stage runner without a model: complete stages are skipped, partial ones rerun, a changed config
is refused in one line naming --fresh, --fresh recomputes, and an `out` that is not ours is left alone."""

from __future__ import annotations

import json

import pytest

from agentrm_jax.pipeline.stages import MANIFEST, Stage, StageMismatch, fingerprints, plan_stages, run_stages


def _pipeline(calls: list[str], *, size: int = 3, fail_in: str | None = None):
    """Two stages: `make` writes size lines, `count` reads them and writes their count."""

    def make(ctx):
        calls.append("make")
        (ctx.dir / "lines.txt").write_text("".join(f"{i}\n" for i in range(size)))
        if fail_in == "make":
            raise KeyboardInterrupt  # a kill after a partial write
        return f"{size} lines"

    def count(ctx):
        calls.append("count")
        n = len((ctx.inputs["make"] / "lines.txt").read_text().splitlines())
        (ctx.dir / "count.json").write_text(json.dumps({"n": n}))
        return f"counted {n}"

    return [Stage("make", make, {"size": size}, ("lines.txt",)),
            Stage("count", count, {}, ("count.json",), needs=("make",))]


def test_a_rerun_skips_complete_stages_and_says_so(tmp_path):
    calls, lines = [], []
    out = tmp_path / "run"
    assert run_stages(_pipeline(calls), out, log=lines.append) == {"make": "3 lines", "count": "counted 3"}
    assert calls == ["make", "count"]
    assert json.loads((out / "count" / "count.json").read_text()) == {"n": 3}
    assert json.loads((out / "make" / MANIFEST).read_text())["status"] == "complete"
    lines.clear()
    assert run_stages(_pipeline(calls), out, log=lines.append) == {"make": "3 lines", "count": "counted 3"}
    assert calls == ["make", "count"]  # nothing ran again
    assert len(lines) == 2 and all("skipped" in line and "--fresh" in line for line in lines)
    assert lines[0].startswith("[1/2] make: done already") and lines[0].endswith("3 lines")


def test_partial_outputs_never_count_as_complete(tmp_path):
    calls = []
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_stages(_pipeline(calls, fail_in="make"), out, log=lambda _: None)
    assert (out / "make" / "lines.txt").exists()  # the output is there, the stage is not complete
    assert json.loads((out / "make" / MANIFEST).read_text())["status"] == "running"
    assert [p.action for p in plan_stages(_pipeline([]), out)] == ["resume", "run"]
    lines = []
    run_stages(_pipeline(calls), out, log=lines.append)
    assert calls == ["make", "make", "count"]
    assert "resuming" in lines[0]
    # a complete stage whose output was deleted is recomputed too
    (out / "count" / "count.json").unlink()
    assert [p.action for p in plan_stages(_pipeline([]), out)] == ["skip", "resume"]
    # and a manifest torn by a kill reads as "not complete", not as an error
    (out / "make" / MANIFEST).write_text('{"stage": "ma')
    assert [p.action for p in plan_stages(_pipeline([]), out)][0] == "resume"


def test_a_changed_config_is_refused_in_one_line_and_fresh_recomputes(tmp_path):
    calls = []
    out = tmp_path / "run"
    run_stages(_pipeline(calls), out, log=lambda _: None)
    with pytest.raises(StageMismatch) as err:
        run_stages(_pipeline(calls, size=5), out, log=lambda _: None)
    message = str(err.value)
    assert "\n" not in message and "'make'" in message and "size: 3 -> 5" in message and "--fresh" in message
    assert calls == ["make", "count"]  # refused before any stage ran
    run_stages(_pipeline(calls, size=5), out, fresh=True, log=lambda _: None)
    assert calls == ["make", "count", "make", "count"]
    assert json.loads((out / "count" / "count.json").read_text()) == {"n": 5}


def test_a_change_upstream_changes_the_fingerprints_below_it():
    a, b = fingerprints(_pipeline([], size=3)), fingerprints(_pipeline([], size=4))
    assert a["make"] != b["make"] and a["count"] != b["count"]
    assert fingerprints(_pipeline([], size=3)) == a
    with pytest.raises(ValueError, match="needs 'make', which is not an earlier stage"):
        fingerprints(list(reversed(_pipeline([]))))


def test_an_out_directory_that_is_not_ours_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for fresh in (False, True):
        with pytest.raises(ValueError, match="was not written by `agentrm pipeline`"):
            run_stages(_pipeline([]), mine, fresh=fresh, log=lambda _: None)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_a_stage_that_returns_without_its_outputs_is_not_marked_complete(tmp_path):
    stage = Stage("lazy", lambda ctx: "did nothing", {}, ("result.txt",))
    with pytest.raises(RuntimeError, match="without writing result.txt"):
        run_stages([stage], tmp_path / "run", log=lambda _: None)
    assert json.loads((tmp_path / "run" / "lazy" / MANIFEST).read_text())["status"] == "running"


def _three(calls: list[str], *, size: int = 3, extra: int = 0):
    """make -> count, plus `side`, which needs nothing and whose params are `extra`."""
    def side(ctx):
        calls.append("side")
        (ctx.dir / "side.txt").write_text(str(extra))
        return "side"

    return [Stage("side", side, {"extra": extra}, ("side.txt",)), *_pipeline(calls, size=size)]


def test_redo_changed_recomputes_the_changed_stage_and_those_below_it_only(tmp_path):
    calls, lines = [], []
    out = tmp_path / "run"
    run_stages(_three(calls), out, log=lambda _: None)
    assert calls == ["side", "make", "count"]
    with pytest.raises(StageMismatch, match="--redo-changed"):
        run_stages(_three(calls, size=5), out, log=lambda _: None)
    run_stages(_three(calls, size=5), out, redo_changed=True, log=lines.append)
    assert calls == ["side", "make", "count", "make", "count"]  # side was still valid: kept
    assert json.loads((out / "count" / "count.json").read_text()) == {"n": 5}
    assert sum("made with another config, recomputing" in line for line in lines) == 2
    assert any(line.startswith("[1/3] side: done already") for line in lines)
    # a change below leaves the stages above it alone too
    run_stages(_three(calls, size=5, extra=1), out, redo_changed=True, log=lambda _: None)
    assert calls[-1] == "side" and calls.count("make") == 2


def test_the_marker_names_its_pipeline_and_the_current_stages(tmp_path):
    out = tmp_path / "run"
    run_stages(_pipeline([]), out, pipeline="demo", log=lambda _: None)
    with pytest.raises(ValueError, match="holds the stages of `agentrm demo`, not of `agentrm reproduce`"):
        run_stages(_pipeline([]), out, pipeline="reproduce", fresh=True, log=lambda _: None)
    assert (out / "make" / "lines.txt").exists()  # --fresh of another pipeline deleted nothing
    run_stages(_three([]), out, pipeline="demo", log=lambda _: None)
    assert json.loads((out / "pipeline.json").read_text())["stages"] == ["side", "make", "count"]
