"""`agentrm sft --overwrite` starts a run afresh: the old run's policy/ and sft section go first, so a new
run that dies early cannot leave `--policy RUN_DIR` loading the previous run's weights."""

from __future__ import annotations

import json

import pytest

from agentrm_jax.sft.config import SFTSection
from agentrm_jax.training.config import TrainConfig


def _config(out):
    return TrainConfig(kind="sft", train=str(out.parent / "demos.jsonl"), model="bundled", finetune="lora",
                       out=str(out))


def test_overwrite_removes_the_old_policy_before_training(tmp_path, monkeypatch):
    import agentrm_jax.sft.run as sft_run
    import agentrm_jax.training.trainer as trainer

    out = tmp_path / "run"
    (out / "policy").mkdir(parents=True)
    (out / "policy" / "adapters.json").write_text("{}")
    (out / "sft_config.json").write_text(json.dumps({"tasks": ["shop"]}))
    (out / "train_config.json").write_text(json.dumps(_config(out).to_dict()))
    seen = {}

    def dying_train(config, **kwargs):
        seen["policy_there"] = (out / "policy").exists()
        seen["sft_config_there"] = (out / "sft_config.json").exists()
        raise KeyboardInterrupt  # the new run dies before writing anything

    monkeypatch.setattr(trainer, "train", dying_train)
    monkeypatch.setattr(sft_run, "write_policy", lambda *a, **k: pytest.fail("no policy after a dead run"))
    with pytest.raises(KeyboardInterrupt):
        sft_run.run_sft(_config(out), SFTSection(tasks=("twx",)), progress=False, overwrite=True, tokenizer=object())
    assert seen == {"policy_there": False, "sft_config_there": False}


def test_overwrite_in_a_directory_that_is_not_a_run_deletes_nothing(tmp_path):
    import agentrm_jax.sft.run as sft_run

    out = tmp_path / "mine"
    (out / "policy").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("{}\n")  # someone else's file of a run's name
    with pytest.raises(ValueError, match="not a training run"):
        sft_run.run_sft(_config(out), SFTSection(), progress=False, overwrite=True, tokenizer=object())
    assert (out / "policy").is_dir() and (out / "metrics.jsonl").exists()


def test_overwrite_outside_a_run_leaves_a_policy_folder_alone(tmp_path, monkeypatch):
    import agentrm_jax.sft.run as sft_run
    import agentrm_jax.training.trainer as trainer

    out = tmp_path / "notes"
    (out / "policy").mkdir(parents=True)
    (out / "policy" / "my_notes.txt").write_text("mine")
    monkeypatch.setattr(trainer, "train", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        sft_run.run_sft(_config(out), SFTSection(), progress=False, overwrite=True, tokenizer=object())
    assert (out / "policy" / "my_notes.txt").read_text() == "mine"
