"""Resuming with another run length (steps / epochs): the warmup + cosine schedule is rebuilt for the new
length, said on stderr, in TrainResult.notes and in a metrics.jsonl row, and recorded in the checkpoints'
meta; the steps already trained keep their rows, and the steps after the resume take the rate a run started
with the new length gives them (the optimizer's step count continues from the checkpoint)."""

from __future__ import annotations

import shutil

import pytest

from agentrm_jax.training.checkpoint import Checkpointer
from agentrm_jax.training.commands import summary
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.optimizer import learning_rate
from agentrm_jax.training.trainer import train
from trainer_helpers import metrics_rows, tiny_model, write_trajectories


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_trajectories(tmp_path_factory.mktemp("schedule") / "t.jsonl", 8)


def config(data, out, **overrides) -> TrainConfig:
    values = dict(train=str(data), kind="explicit", finetune="head", steps=3, batch_size=4, lr=1e-2,
                  warmup_steps=1, min_lr_ratio=0.0, max_length=64, save_every=1, keep=10, out=str(out))
    return TrainConfig(**{**values, **overrides})


def run(data, out, tokenizer, **overrides):
    return train(config(data, out, **overrides), backbone=tiny_model(), tokenizer=tokenizer, progress=False)


def loss_rows(out):
    return {r["step"]: r for r in metrics_rows(out) if "loss" in r}


@pytest.fixture(scope="module")
def three_steps(data, tmp_path_factory, bundled_tokenizer):
    out = tmp_path_factory.mktemp("three") / "run"
    result = run(data, out, bundled_tokenizer)
    assert sorted(result.losses) == [1, 2, 3] and result.notes == ()
    return out


def test_raising_steps_rebuilds_the_schedule_and_says_so(three_steps, data, tmp_path, bundled_tokenizer, capsys):
    before = loss_rows(three_steps)
    assert summary(run(data, three_steps, bundled_tokenizer)).endswith(
        "nothing to train (raise --steps to go on; the LR schedule is then rebuilt for the new length, or "
        "pass --overwrite to start over)")
    out = shutil.copytree(three_steps, tmp_path / "run")
    capsys.readouterr()
    result = run(data, out, bundled_tokenizer, steps=5)
    assert result.resumed_from == 3 and sorted(result.losses) == [4, 5]

    (message,) = [n for n in result.notes if "run length changed" in n]
    assert "from 3 to 5 steps" in message and "steps 1-3" in message and "steps 4-5" in message
    assert f"lr at step 4: {learning_rate(config(data, out), 5, 3):.3g}" in message
    assert "past the old one's end" in message  # count 3 of a 3-step schedule: it had ended
    assert f"train: {message}" in capsys.readouterr().err

    rows = metrics_rows(out)
    (event,) = [r for r in rows if "lr_schedule_rebuilt" in r]
    assert event == {"step": 3, "lr_schedule_rebuilt": {"from_total_steps": 3, "total_steps": 5,
                                                         "next_lr": learning_rate(config(data, out), 5, 3),
                                                         "next_lr_before": None}}
    after = loss_rows(out)
    assert {s: after[s] for s in (1, 2, 3)} == before  # the steps already trained keep their rows

    # steps 4-5 take the rates of a run started with 5 steps (the step count continued from 3, not from 0)
    fresh = run(data, tmp_path / "fresh", bundled_tokenizer, steps=5)
    fresh_rows = loss_rows(fresh.out)
    assert [after[s]["lr"] for s in (4, 5)] == [fresh_rows[s]["lr"] for s in (4, 5)]
    assert after[4]["lr"] != learning_rate(config(data, out), 5, 0)  # not the schedule restarted
    # the first three differ: they ran under the 3-step schedule
    assert [after[s]["lr"] for s in (1, 2, 3)] != [fresh_rows[s]["lr"] for s in (1, 2, 3)]

    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.read_meta(5)["lr_schedule"] == [{"from_step": 0, "total_steps": 3},
                                                   {"from_step": 3, "total_steps": 5}]
        assert ckpt.read_meta(3)["lr_schedule"] == [{"from_step": 0, "total_steps": 3}]


def test_a_killed_rebuilt_run_resumes_without_a_second_note_row(three_steps, data, tmp_path, bundled_tokenizer):
    out = shutil.copytree(three_steps, tmp_path / "run")
    run(data, out, bundled_tokenizer, steps=5)
    shutil.rmtree(out / "checkpoints" / "5")  # killed after checkpoint 4
    shutil.rmtree(out / "checkpoints" / "4")  # ... or rather after 3: the rebuild is redone from there
    result = run(data, out, bundled_tokenizer, steps=5)
    assert result.resumed_from == 3 and sorted(result.losses) == [4, 5]
    assert len([r for r in metrics_rows(out) if "lr_schedule_rebuilt" in r]) == 1

    # resumed inside the rebuilt segment with the same length: nothing is rebuilt, nothing said
    shutil.rmtree(out / "checkpoints" / "5")
    again = run(data, out, bundled_tokenizer, steps=5)
    assert again.resumed_from == 4 and not any("run length" in n for n in again.notes)
    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.read_meta(5)["lr_schedule"] == [{"from_step": 0, "total_steps": 3},
                                                   {"from_step": 3, "total_steps": 5}]


def test_lowering_epochs_mid_run_is_announced_with_both_rates(data, tmp_path, bundled_tokenizer):
    out = tmp_path / "run"
    with pytest.raises(_Stop):  # stopped in step 3, before its checkpoint: the run resumes from 2
        train(config(data, out, steps=None, epochs=3.0), backbone=tiny_model(), tokenizer=bundled_tokenizer,
              progress=False, on_step=_stop_after(2))
    result = run(data, out, bundled_tokenizer, steps=None, epochs=2.0)  # 8 records / 4 a step: 6 -> 4 steps
    assert result.resumed_from == 2 and sorted(result.losses) == [3, 4]
    (message,) = [n for n in result.notes if "run length changed" in n]
    cfg = config(data, out)
    assert "from 6 to 4 steps" in message
    assert f"lr at step 3: {learning_rate(cfg, 4, 2):.3g}, {learning_rate(cfg, 6, 2):.3g} under the old one" in message


class _Stop(Exception):
    pass


def _stop_after(step):
    def on_step(s, _loss):
        if s > step:
            raise _Stop
    return on_step
