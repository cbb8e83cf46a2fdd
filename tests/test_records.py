"""Trajectory records and their JSONL files (agentrm_jax.records)."""

from __future__ import annotations

import json

import pytest

from agentrm_jax.records import PreferencePair, RecordError, Step, Trajectory, append_jsonl, read_jsonl, write_jsonl

TRAJ = Trajectory(task="maze", instruction="Reach the goal at (2, 3).", id="t1",
                  steps=(Step("The goal is north.", "move north", "You are at (2, 2)."),
                         Step("", "move north", "You reached the goal.")),
                  success=True, progress=1.0)


def test_jsonl_round_trip(tmp_path):
    pair = PreferencePair(TRAJ, TRAJ.prefix(1), id="p1")
    write_jsonl(tmp_path / "t.jsonl", [TRAJ, TRAJ.replace(id="t2", value=0.25)])
    append_jsonl(tmp_path / "t.jsonl", [TRAJ.replace(id="t3")])
    back = read_jsonl(tmp_path / "t.jsonl")
    assert back[0] == TRAJ and back[1].value == 0.25 and [t.id for t in back] == ["t1", "t2", "t3"]
    write_jsonl(tmp_path / "p.jsonl", [pair])
    (got,) = read_jsonl(tmp_path / "p.jsonl", kind="pair")
    assert got == pair and got.rejected.success is None and len(got.rejected) == 1


@pytest.mark.parametrize("line, field", [
    ('{"task": "maze", "instruction": "x", "steps": [{"thought": 3}]}', "steps[0].thought"),
    ('{"instruction": "x"}', "task"),
    ('{"task": "m", "instruction": "x", "progress": 1.5}', "progress"),
    ('{"task": "m", "instruction": "x", "success": "yes"}', "success"),
    ('{"task": "m", "instruction": "x", "steps": [{"act": "go"}]}', "steps[0]"),
    ('{"task": "m", "instruction": "x", "value": NaN}', "value"),
])
def test_malformed_row_names_file_line_and_field(tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(TRAJ.to_dict()) + "\n\n" + line + "\n")
    with pytest.raises(RecordError) as err:
        read_jsonl(path)
    assert f"{path}:3" in str(err.value) and err.value.line == 3 and err.value.field == field


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task": "m", "instruction": "x"}\n{"task": \n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: invalid JSON"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    path.write_text('{"chosen": ' + json.dumps(TRAJ.to_dict()) + "}\n")
    with pytest.raises(RecordError, match="rejected") as err:
        read_jsonl(path, kind="pair")
    assert err.value.line == 1
