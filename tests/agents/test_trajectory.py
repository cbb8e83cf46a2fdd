"""Trajectory records: JSONL round trip, file:line errors, and rendering for reward models."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from agentrm_jax.agents.trajectory import (PreferencePair, RecordError, Step, Trajectory, append_jsonl,
                                           read_jsonl, render_batch_for_rm, render_for_rm, write_jsonl)

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


@pytest.mark.parametrize("tokenizer_fixture", ["bundled_tokenizer", "llama3_style_tokenizer"])
def test_step_ends_land_on_the_last_action_token(request, tokenizer_fixture):
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    r = render_for_rm(TRAJ, tokenizer)
    assert r.step_ends.shape == (2,) and np.all(np.diff(r.step_ends) > 0)
    for step, start, end in zip(TRAJ.steps, r.step_starts, r.step_ends):
        upto = tokenizer.decode(r.input_ids[:end + 1])
        assert upto.endswith(step.action), upto[-40:]
        assert not tokenizer.decode(r.input_ids[:end]).endswith(step.action)
        content = tokenizer.decode(r.input_ids[start:end + 1])
        assert content.strip().endswith(step.action) and content.strip().startswith(("Thought:", "Action:"))
        assert r.agent_mask[start:end + 1].all()
    # agent tokens are exactly the two assistant contents: no instruction or observation text
    agent_text = tokenizer.decode(r.input_ids[r.agent_mask])
    assert "goal at" not in agent_text and "You are at" not in agent_text and "move north" in agent_text
    assert r.input_ids.dtype == np.int32 and not r.truncated


def test_empty_trajectory_renders_the_instruction_alone(bundled_tokenizer):
    r = render_for_rm(Trajectory("maze", "Reach the goal."), bundled_tokenizer)
    assert r.length > 3 and r.step_ends.shape == (0,) and not r.agent_mask.any()
    assert "Reach the goal." in bundled_tokenizer.decode(r.input_ids)


def test_over_long_keeps_instruction_and_latest_steps(bundled_tokenizer):
    steps = tuple(Step(f"thinking {i}", f"act {i}", "observation " * 10) for i in range(12))
    traj = Trajectory("maze", "UNIQUE-INSTRUCTION here.", steps)
    full = render_for_rm(traj, bundled_tokenizer)
    budget = full.length // 2
    with pytest.warns(UserWarning, match="1 of 2 trajectories exceeded max_length"):
        short, ok = render_batch_for_rm([traj, traj.prefix(1)], bundled_tokenizer, max_length=budget)
    assert short.truncated and not ok.truncated and short.length <= budget
    assert short.first_step > 0 and np.all(short.step_ends[:short.first_step] == -1)
    assert np.all(short.step_ends[short.first_step:] >= 0)
    text = bundled_tokenizer.decode(short.input_ids)
    assert "UNIQUE-INSTRUCTION" in text and "act 11" in text and "act 0\n" not in text
    # even the instruction and the last step alone do not fit: the last max_length tokens are kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny = render_for_rm(traj, bundled_tokenizer, max_length=12)
    assert tiny.length == 12 and tiny.truncated
    assert np.array_equal(tiny.input_ids, full.input_ids[-12:])
    assert np.all(tiny.step_ends == -1)  # the last action lies before its 10-word observation: cut too


def test_over_long_never_drops_the_last_step(bundled_tokenizer):
    # Dropping every step would fit, but the last step is what a score is about: the tokens are cut
    # from the left instead, keeping the last action and its observation.
    traj = Trajectory("maze", "instruction " * 40, (Step("", "go north", "a wall"),))
    full = render_for_rm(traj, bundled_tokenizer)
    budget = full.length - 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = render_for_rm(traj, bundled_tokenizer, max_length=budget)
    assert cut.truncated and cut.length == budget
    assert np.array_equal(cut.input_ids, full.input_ids[-budget:])
    assert cut.step_ends[-1] == full.step_ends[-1] - 10
    assert "go north" in bundled_tokenizer.decode(cut.input_ids)
