"""Trajectories rendered to tokens for a reward model (agentrm_jax.rewards.rendering)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from agentrm_jax.records import Step, Trajectory
from agentrm_jax.rewards.rendering import render_batch_for_rm, render_for_rm

TRAJ = Trajectory(task="maze", instruction="Reach the goal at (2, 3).", id="t1",
                  steps=(Step("The goal is north.", "move north", "You are at (2, 2)."),
                         Step("", "move north", "You reached the goal.")),
                  success=True, progress=1.0)


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


@pytest.mark.parametrize("tokenizer_fixture", ["bundled_tokenizer", "llama3_style_tokenizer"])
def test_prefix_ends_are_where_each_prefix_rendering_ends(request, tokenizer_fixture):
    # An explicit RM reads step i's score at prefix_ends[i]: the tokens up to there must be exactly the
    # rendering of the prefix with i + 1 steps, whose trajectory score is read at its last token.
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    no_obs = TRAJ.replace(steps=(Step("", "look", ""), *TRAJ.steps, Step("done", "stop", "")))
    for traj in (TRAJ, no_obs):
        r = render_for_rm(traj, tokenizer)
        assert r.prefix_ends.shape == (len(traj),) and r.prefix_ends[-1] == r.length - 1
        for i in range(len(traj)):
            prefix = render_for_rm(traj.prefix(i + 1), tokenizer)
            assert np.array_equal(r.input_ids[:r.prefix_ends[i] + 1], prefix.input_ids), i
            assert r.prefix_ends[i] >= r.step_ends[i]
    assert render_for_rm(Trajectory("maze", "x"), tokenizer).prefix_ends.shape == (0,)


def test_truncation_warning_says_what_was_kept(bundled_tokenizer):
    steps = tuple(Step("", f"act {i}", "observation " * 10) for i in range(12))
    traj = Trajectory("maze", "Reach the goal.", steps)
    budget = render_for_rm(traj, bundled_tokenizer).length // 2
    with pytest.warns(UserWarning) as caught:
        (kept,) = render_batch_for_rm([traj], bundled_tokenizer, max_length=budget)
    message = str(caught[0].message)
    assert f"kept the instruction and the last {len(steps) - kept.first_step} steps" in message
    assert "instruction was cut" not in message and kept.cut_tokens == 0
    with pytest.warns(UserWarning) as caught:  # 20 tokens: not even the instruction fits
        (cut,) = render_batch_for_rm([TRAJ], bundled_tokenizer, max_length=20)
    message = str(caught[0].message)
    assert "1 of 1 trajectories exceeded max_length=20" in message
    assert "kept only the last 20 tokens, so the instruction was cut" in message
    assert "kept the instruction" not in message and cut.cut_tokens > 0 and cut.length == 20
    assert cut.prefix_ends[-1] == 19 and cut.prefix_ends[0] == -1
