"""The run directory of `agentrm train`: train_config.json (not an HF-looking config.json) and the legacy
layout, --out refusing a directory that is not a run and --overwrite, the summary of a rerun of a finished
run, and resuming past damaged checkpoints (truncated array file, truncated metadata file, all damaged).

Runs are tiny and head-only (one small compile each), on the in-memory tiny model of trainer_helpers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agentrm_jax.training.checkpoint import Checkpointer
from agentrm_jax.training.commands import summary
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.run_dir import (TRAIN_CONFIG_FILE, is_training_run, read_metrics, read_train_config,
                                          train_config_file)
from agentrm_jax.training.trainer import train
from trainer_helpers import (REPO, save_tiny_model, step_losses, subprocess_env, tiny_model, write_trajectories,
                             write_yaml)


@pytest.fixture(scope="module")
def files(tmp_path_factory, bundled_tokenizer):
    root = tmp_path_factory.mktemp("run_dir")
    return dict(root=root, data=write_trajectories(root / "data.jsonl", 8),
                model=save_tiny_model(root / "model", bundled_tokenizer))


def config(files, out, **overrides) -> TrainConfig:
    # model: the saved copy of tiny_model(), which the in-process runs pass as `backbone` (the CLI loads it)
    values = dict(model=str(files["model"]), train=str(files["data"]), kind="explicit", finetune="head", steps=3,
                  batch_size=4, lr=1e-2, warmup_steps=0, max_length=64, save_every=1, keep=3, out=str(out))
    return TrainConfig(**{**values, **overrides})


def run(files, tokenizer, out, *, overwrite=False, **overrides):
    return train(config(files, out, **overrides), backbone=tiny_model(), tokenizer=tokenizer, progress=False,
                 overwrite=overwrite)


@pytest.fixture(scope="module")
def finished(files, bundled_tokenizer):
    """A finished 3-step run with a checkpoint per step; tests copy it before changing anything."""
    out = files["root"] / "finished"
    result = run(files, bundled_tokenizer, out)
    assert sorted(result.losses) == [1, 2, 3]
    return out, result


def copy_run(finished, tmp_path, name="run") -> Path:
    out = tmp_path / name
    shutil.copytree(finished[0], out)
    return out


# ------------------------------------------------------------------------------- train_config.json


def test_a_run_keeps_its_config_in_train_config_json_not_config_json(finished, files):
    out, _ = finished
    assert (out / TRAIN_CONFIG_FILE).is_file() and not (out / "config.json").exists()
    assert read_train_config(out)["kind"] == "explicit" and read_train_config(out)["steps"] == 3
    assert is_training_run(out)
    assert not is_training_run(files["model"])  # an HF model directory (config.json) is not a run
    assert read_train_config(files["model"]) is None
    assert not is_training_run(files["root"] / "nowhere")


def test_a_legacy_run_with_its_train_config_in_config_json_resumes(finished, files, bundled_tokenizer, tmp_path):
    out = copy_run(finished, tmp_path)
    (out / TRAIN_CONFIG_FILE).rename(out / "config.json")  # what the old trainer wrote
    assert is_training_run(out) and train_config_file(out) == out / "config.json"
    result = run(files, bundled_tokenizer, out, steps=4)
    assert result.resumed_from == 3 and sorted(result.losses) == [4]
    # migrated: the train config now has its own name, and no config.json is left to pass for a model's
    assert (out / TRAIN_CONFIG_FILE).is_file() and not (out / "config.json").exists()
    assert read_train_config(out)["steps"] == 4
    assert any("renamed" in note and "config.json" in note for note in result.notes), result.notes


# ---------------------------------------------------------------------------------- --out, --overwrite


def test_training_into_a_directory_that_is_not_a_run_is_refused(files, bundled_tokenizer, tmp_path):
    model_dir = shutil.copytree(files["model"], tmp_path / "model")
    hf_config = (model_dir / "config.json").read_text()
    with pytest.raises(ValueError) as err:
        run(files, bundled_tokenizer, model_dir)
    message = str(err.value)
    assert "\n" not in message and str(model_dir) in message and "config.json" in message
    assert "model.safetensors" in message and "--overwrite" in message
    assert (model_dir / "config.json").read_text() == hf_config
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(p.name for p in files["model"].iterdir())


def test_overwrite_trains_beside_foreign_files_and_keeps_them(files, bundled_tokenizer, tmp_path):
    model_dir = shutil.copytree(files["model"], tmp_path / "model")
    hf_config = (model_dir / "config.json").read_text()
    result = run(files, bundled_tokenizer, model_dir, overwrite=True, steps=1)
    assert sorted(result.losses) == [1]
    assert (model_dir / "config.json").read_text() == hf_config  # the model's config is untouched
    assert (model_dir / "model.safetensors").is_file() and is_training_run(model_dir)


def test_overwrite_never_deletes_run_named_files_of_a_directory_that_is_not_a_run(tmp_path):
    from agentrm_jax.training.run_dir import check_out_dir

    other = tmp_path / "other_tool"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "epoch_9.pt").write_text("someone else's")
    (other / "metrics.jsonl").write_text('{"theirs": 1}\n')
    with pytest.raises(ValueError, match=r"is not a training run but holds checkpoints, metrics\.jsonl"):
        check_out_dir(other, overwrite=True)
    assert (other / "checkpoints" / "epoch_9.pt").is_file() and (other / "metrics.jsonl").is_file()


def test_overwrite_starts_a_run_over(finished, files, bundled_tokenizer, tmp_path):
    out = copy_run(finished, tmp_path)
    (out / "notes.txt").write_text("mine")
    result = run(files, bundled_tokenizer, out, overwrite=True, steps=2)
    assert result.resumed_from is None and sorted(result.losses) == [1, 2]
    assert result.losses[1] == finished[1].losses[1]  # from scratch: the same first step
    assert [s for s, _ in step_losses(out)] == [1, 2]
    assert Checkpointer(out / "checkpoints").all_steps() == [1, 2]
    assert (out / "notes.txt").read_text() == "mine"
    assert any("--overwrite: removed checkpoints/, metrics.jsonl, train_config.json" in n for n in result.notes)


def test_an_empty_or_new_out_is_fine(files, bundled_tokenizer, tmp_path):
    (tmp_path / "empty").mkdir()
    assert sorted(run(files, bundled_tokenizer, tmp_path / "empty", steps=1).losses) == [1]


# ------------------------------------------------------------------------------- finished-run rerun


def test_rerunning_a_finished_run_reports_its_real_last_loss(finished, files, bundled_tokenizer, tmp_path):
    out = copy_run(finished, tmp_path)
    result = run(files, bundled_tokenizer, out)
    assert result.losses == {} and result.already_complete and result.step == 3
    logged = [row["loss"] for row in read_metrics(out) if "loss" in row]
    assert result.last_loss == logged[-1] == finished[1].losses[3]
    line = summary(result)
    assert "nan" not in line and "already complete at step 3" in line
    assert f"last loss {finished[1].losses[3]:.4f}" in line


# ------------------------------------------------------------------------------- damaged checkpoints


def _array_files(step_dir: Path) -> list[Path]:
    """The array data files of a checkpoint step (orbax OCDBT: state/d/<hash>)."""
    files = sorted((step_dir / "state" / "d").iterdir())
    assert files, list((step_dir / "state").iterdir())
    return files


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


@pytest.mark.parametrize("damage", ["array", "metadata"])
def test_resume_skips_a_damaged_newest_checkpoint(finished, files, bundled_tokenizer, tmp_path, damage):
    out = copy_run(finished, tmp_path)
    newest = out / "checkpoints" / "3"
    if damage == "array":
        for f in _array_files(newest):
            truncate(f, 100)
        expect = "state/d/"
    else:
        truncate(newest / "meta" / "metadata", 11)  # json.loads: "Expecting value: line 1 column 12"
        expect = "meta/metadata is not valid JSON"
    result = run(files, bundled_tokenizer, out, steps=4)
    assert result.resumed_from == 2 and sorted(result.losses) == [3, 4]
    assert result.losses[3] == finished[1].losses[3]  # step 3 again, from step 2's state: the same loss
    note = next(n for n in result.notes if "damaged" in n)
    assert "checkpoint step 3" in note and expect in note and "resuming from step 2" in note, note
    assert (out / "checkpoints" / "3.corrupt").is_dir()  # set aside, not deleted
    assert Checkpointer(out / "checkpoints").all_steps() == [2, 3, 4]  # rotation still keeps 3
    assert [s for s, _ in step_losses(out)] == [1, 2, 3, 4]


def test_with_every_checkpoint_damaged_the_error_says_how_to_go_on(finished, files, bundled_tokenizer, tmp_path):
    out = copy_run(finished, tmp_path)
    for step in (1, 2, 3):
        truncate(out / "checkpoints" / str(step) / "meta" / "metadata", 11)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(ValueError) as err:
        run(files, bundled_tokenizer, out, steps=4)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"no intact checkpoint in {out / 'checkpoints'}")
    assert all(f"step {s}: meta/metadata is not valid JSON" in message for s in (1, 2, 3)), message
    assert "--overwrite" in message and "backup" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing moved


def test_the_cli_reports_all_damaged_checkpoints_in_one_line(finished, files, tmp_path):
    out = copy_run(finished, tmp_path)
    for step in (1, 2, 3):
        for f in _array_files(out / "checkpoints" / str(step)):
            truncate(f, 100)
    path = write_yaml(tmp_path / "train.yaml", config(files, out).to_dict())
    proc = subprocess.run([sys.executable, "-m", "agentrm_jax.cli", "train", "--config", str(path), "--no-progress"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("agentrm train: error:")]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0] and "step 1: state/d/" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr, proc.stderr[-3000:]


def test_the_cli_summary_of_a_finished_run(finished, files, tmp_path):
    out = copy_run(finished, tmp_path)
    path = write_yaml(tmp_path / "train.yaml", config(files, out).to_dict())
    proc = subprocess.run([sys.executable, "-m", "agentrm_jax.cli", "train", "--config", str(path), "--no-progress"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(last loss nan)" not in proc.stderr and "already complete at step 3" in proc.stderr, proc.stderr[-2000:]
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert f"last loss {logged:.4f}" in proc.stderr
