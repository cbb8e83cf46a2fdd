"""`agentrm score`: end to end on a saved RM, resume without duplicates, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rm_helpers import random_trajectories

from agentrm_jax.agents.trajectory import write_jsonl
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
