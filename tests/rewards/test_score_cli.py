"""`agentrm score`: end to end on a saved RM, resume without duplicates (only with the same RM), content ids,
clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from rm_helpers import random_trajectories

from agentrm_jax.records import Step, Trajectory, write_jsonl
from agentrm_jax.cli import main
from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import ExplicitRM, ValueModel, save_value_model


@pytest.fixture(scope="module")
def saved_rm(tmp_path_factory, bundled_tokenizer):
    path = tmp_path_factory.mktemp("rm") / "rm"
    model = ValueModel.create(init_model(ModelConfig.tiny(vocab_size=49152), seed=0), seed=1)
    save_value_model(model, path, tokenizer=bundled_tokenizer)
    return path, model


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_writes_rows_and_resumes_without_duplicates(tmp_path, saved_rm, bundled_tokenizer):
    rm_dir, model = saved_rm
    trajectories = random_trajectories(10, seed=4)
    write_jsonl(tmp_path / "in.jsonl", trajectories)
    out = tmp_path / "scores.jsonl"
    args = ["score", "--rm", str(rm_dir), "--input", str(tmp_path / "in.jsonl"), "--output", str(out),
            "--batch-size", "4"]
    assert main(args) == 0
    rows = _rows(out)
    assert [r["id"] for r in rows] == [t.id for t in trajectories]
    expected, steps = ExplicitRM(model, bundled_tokenizer).score_with_steps(trajectories)
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-5)
    assert all(len(r["step_scores"]) == len(t.steps) for r, t in zip(rows, trajectories))
    # simulate a run killed mid-write: 6 rows kept, the 7th torn
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][:15])
    assert main(args) == 0
    again = _rows(out)
    assert sorted(r["id"] for r in again) == sorted(t.id for t in trajectories) and len(again) == 10
    np.testing.assert_allclose([r["score"] for r in again], [r["score"] for r in rows], atol=1e-6)
    assert main(args) == 0 and len(_rows(out)) == 10  # nothing left: nothing appended


def test_bad_inputs_name_file_line_and_field(tmp_path, saved_rm, capsys):
    rm_dir, _ = saved_rm
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "m", "instruction": "x"}\n{"task": "m", "steps": []}\n')
    code = main(["score", "--rm", str(rm_dir), "--input", str(bad), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2 and f"{bad}:2" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(SystemExit, match="no such file"):
        main(["score", "--rm", str(rm_dir), "--input", str(tmp_path / "none.jsonl"), "--output", "x"])
    good = tmp_path / "good.jsonl"
    good.write_text('{"task": "m", "instruction": "x"}\n')
    assert main(["score", "--rm-kind", "implicit", "--input", str(good), "--output", "x"]) == 2
    assert "--policy" in capsys.readouterr().err
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "task": "m", "instruction": "x"}\n' * 2)
    assert main(["score", "--rm", str(rm_dir), "--input", str(dup), "--output", str(tmp_path / "d.jsonl")]) == 2
    assert "appears more than once" in capsys.readouterr().err


@pytest.fixture(scope="module")
def other_rm(tmp_path_factory, bundled_tokenizer):
    path = tmp_path_factory.mktemp("rm2") / "rm"
    model = ValueModel.create(init_model(ModelConfig.tiny(vocab_size=49152), seed=0), seed=7)
    save_value_model(model, path, tokenizer=bundled_tokenizer)
    return path, model


def _score(rm_dir, inp, out, *extra):
    return main(["score", "--rm", str(rm_dir), "--input", str(inp), "--output", str(out), "--batch-size", "4",
                 *extra])


def test_a_different_rm_is_refused_unless_overwrite(tmp_path, saved_rm, other_rm, bundled_tokenizer, capsys):
    trajectories = random_trajectories(5, seed=2)
    write_jsonl(tmp_path / "in.jsonl", trajectories)
    out = tmp_path / "s.jsonl"
    assert _score(saved_rm[0], tmp_path / "in.jsonl", out) == 0
    first = out.read_text()
    meta = json.loads((tmp_path / "s.jsonl.meta.json").read_text())
    assert meta["kind"] == "explicit" and meta["rm"]["path"] == str(saved_rm[0].resolve())
    assert meta["max_length"] == 2048 and len(meta["rm"]["sha256"]) == 64
    capsys.readouterr()
    for rm_dir, extra in ((other_rm[0], ()), (saved_rm[0], ("--max-length", "512"))):
        assert _score(rm_dir, tmp_path / "in.jsonl", out, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert "holds scores from a different reward model" in err and "--overwrite" in err and "\n" not in err
        assert out.read_text() == first  # the old scores are neither kept as new nor touched
    assert _score(other_rm[0], tmp_path / "in.jsonl", out, "--overwrite") == 0
    expected = ExplicitRM(other_rm[1], bundled_tokenizer).score(trajectories)
    np.testing.assert_allclose([r["score"] for r in _rows(out)], expected, atol=1e-5)
    assert json.loads((tmp_path / "s.jsonl.meta.json").read_text())["rm"]["path"] == str(other_rm[0].resolve())
    # the same RM moved elsewhere is the same RM: the run resumes (nothing left to score)
    shutil.copytree(other_rm[0], tmp_path / "moved")
    capsys.readouterr()
    assert _score(tmp_path / "moved", tmp_path / "in.jsonl", out) == 0
    assert "scored 0 trajectories" in capsys.readouterr().err and len(_rows(out)) == 5
    # an output nobody recorded the RM of is refused too
    (tmp_path / "s.jsonl.meta.json").unlink()
    assert _score(other_rm[0], tmp_path / "in.jsonl", out) == 2
    assert "says which reward model wrote them" in capsys.readouterr().err


def test_output_equal_to_input_is_refused(tmp_path, saved_rm, capsys):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, random_trajectories(3, seed=1))
    before = inp.read_text()
    (tmp_path / "link.jsonl").symlink_to(inp)
    for out in (inp, tmp_path / "x" / ".." / "in.jsonl", tmp_path / "link.jsonl"):
        assert _score(saved_rm[0], inp, out) == 2
        assert "is the --input file" in capsys.readouterr().err
    assert inp.read_text() == before and not (tmp_path / "in.jsonl.meta.json").exists()


def test_rows_without_ids_get_content_ids(tmp_path, saved_rm, bundled_tokenizer, capsys):
    rm_dir, model = saved_rm
    trajectories = [t.replace(id=None) for t in random_trajectories(4, seed=3)]
    inp, out = tmp_path / "in.jsonl", tmp_path / "s.jsonl"
    write_jsonl(inp, trajectories)
    assert _score(rm_dir, inp, out) == 0
    ids = [r["id"] for r in _rows(out)]
    assert len(set(ids)) == 4 and all(len(i) == 16 for i in ids)
    new = Trajectory("maze", "a new first row", (Step("", "go west", "a wall"),))
    write_jsonl(inp, [new, *trajectories])  # prepended: every old row keeps its id, the new one is scored
    capsys.readouterr()
    assert _score(rm_dir, inp, out) == 0
    assert "scored 1 trajectories" in capsys.readouterr().err
    rows = {r["id"]: r["score"] for r in _rows(out)}
    assert len(rows) == 5 and set(ids) < set(rows)
    expected = ExplicitRM(model, bundled_tokenizer).score([new, *trajectories])
    got = [rows[i] for i in [next(iter(set(rows) - set(ids))), *ids]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the same content has the same id however the row is written (key order, spacing)
    record = trajectories[0].to_dict()
    del record["id"]
    (tmp_path / "again.jsonl").write_text(json.dumps(dict(reversed(record.items())), indent=None) + "\n")
    assert _score(rm_dir, tmp_path / "again.jsonl", tmp_path / "again_s.jsonl") == 0
    assert _rows(tmp_path / "again_s.jsonl")[0]["id"] == ids[0]
    # identical rows without ids are still duplicates
    (tmp_path / "dup.jsonl").write_text('{"task": "m", "instruction": "x"}\n{"instruction": "x", "task": "m"}\n')
    assert _score(rm_dir, tmp_path / "dup.jsonl", tmp_path / "d.jsonl") == 2
    err = capsys.readouterr().err
    assert "dup.jsonl:2" in err and "appears more than once" in err and "line 1" in err


def test_empty_input_creates_the_output(tmp_path, saved_rm, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    out = tmp_path / "sub" / "s.jsonl"
    assert _score(saved_rm[0], tmp_path / "empty.jsonl", out) == 0
    assert f"scored 0 trajectories -> {out}" in capsys.readouterr().err
    assert out.exists() and out.read_text() == ""
    assert json.loads((tmp_path / "sub" / "s.jsonl.meta.json").read_text())["kind"] == "explicit"


def test_a_changed_row_is_refused_not_kept_with_its_old_score(tmp_path, saved_rm, capsys):
    trajectories = random_trajectories(4, seed=9)
    inp, out = tmp_path / "in.jsonl", tmp_path / "s.jsonl"
    write_jsonl(inp, trajectories)
    assert _score(saved_rm[0], inp, out) == 0
    assert all(len(r["content"]) == 16 for r in _rows(out))
    changed = trajectories[1].replace(instruction=trajectories[1].instruction + " (fixed)")
    write_jsonl(inp, [trajectories[0], changed, *trajectories[2:]])
    before = out.read_text()
    capsys.readouterr()
    assert _score(saved_rm[0], inp, out) == 2
    err = capsys.readouterr().err
    assert f"id {changed.id!r} was scored from other content" in err and "--overwrite" in err
    assert out.read_text() == before
    assert _score(saved_rm[0], inp, out, "--overwrite") == 0 and len(_rows(out)) == 4


def test_a_malformed_middle_row_of_the_output_is_named_not_cut(tmp_path, saved_rm, capsys):
    trajectories = random_trajectories(3, seed=10)
    inp, out = tmp_path / "in.jsonl", tmp_path / "s.jsonl"
    write_jsonl(inp, trajectories)
    assert _score(saved_rm[0], inp, out) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    damaged = out.read_text()
    capsys.readouterr()
    assert _score(saved_rm[0], inp, out) == 2
    assert f"{out}:2" in capsys.readouterr().err and out.read_text() == damaged  # nothing after it was dropped
