"""The base weights' fingerprint (`models.base_fingerprint`): recorded in every checkpoint's meta, and a
resume whose `TrainConfig.model` now holds other weights is refused in one line naming the run directory and
both fingerprints; a checkpoint from before fingerprints resumes with a warning. The fingerprint reads ~2 MiB
a file (header, samples, tail), and still tells apart a same-shaped checkpoint written over the old one."""

from __future__ import annotations

import json
import shutil

import pytest

from agentrm_jax.models.base_fingerprint import base_fingerprint, describe, fingerprint_change
from agentrm_jax.training.checkpoint import Checkpointer
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.trainer import train
from trainer_helpers import save_tiny_model, write_trajectories


@pytest.fixture(scope="module")
def files(tmp_path_factory, bundled_tokenizer):
    root = tmp_path_factory.mktemp("fingerprint")
    return dict(root=root, data=write_trajectories(root / "data.jsonl", 8),
                model=save_tiny_model(root / "model", bundled_tokenizer, seed=0),
                other=save_tiny_model(root / "other", bundled_tokenizer, seed=1))


def config(files, out, model, **overrides) -> TrainConfig:
    values = dict(model=str(model), train=str(files["data"]), kind="explicit", finetune="head", steps=2,
                  batch_size=4, lr=1e-2, warmup_steps=0, max_length=64, save_every=1, out=str(out))
    return TrainConfig(**{**values, **overrides})


def run(files, out, model, tokenizer, **overrides):
    # no backbone passed: the weights come from the file, as from the CLI
    return train(config(files, out, model, **overrides), tokenizer=tokenizer, progress=False)


def test_same_shaped_weights_have_another_fingerprint(files, tmp_path):
    a, b = base_fingerprint(files["model"]), base_fingerprint(files["other"])
    weights = files["model"] / "model.safetensors"
    assert a["path"] == str(files["model"].resolve()) and "model.safetensors" in a["files"]
    assert "config.json" in a["files"] and not any(n.startswith("tokenizer") for n in a["files"])
    assert a["files"]["model.safetensors"]["size"] == weights.stat().st_size == b["files"]["model.safetensors"]["size"]
    assert a["files"]["config.json"] == b["files"]["config.json"]  # same architecture
    change = fingerprint_change(a, b)
    assert change is not None and change.startswith("model.safetensors: ") and "config.json" not in change

    moved = shutil.copytree(files["model"], tmp_path / "moved")
    assert fingerprint_change(a, base_fingerprint(moved)) is None  # the path is recorded, not compared

    # one byte changed deep in the weights (past the first MiB), at a sampled offset: seen
    blob = bytearray(weights.read_bytes())
    assert len(blob) > 4 << 20
    single = tmp_path / "w.safetensors"
    single.write_bytes(blob)
    before = base_fingerprint(single)
    blob[len(blob) - 10] ^= 0xFF  # the tail
    single.write_bytes(blob)
    assert fingerprint_change(before, base_fingerprint(single)) is not None
    assert single.name in describe(before) and str(single.stat().st_size) in describe(before)


def test_a_resume_on_other_base_weights_is_refused(files, tmp_path, bundled_tokenizer):
    model = shutil.copytree(files["model"], tmp_path / "model")
    out = tmp_path / "run"
    assert sorted(run(files, out, model, bundled_tokenizer).losses) == [1, 2]
    with Checkpointer(out / "checkpoints") as ckpt:
        saved = ckpt.read_meta(2)["base"]
    assert saved == base_fingerprint(model)

    shutil.copy(files["other"] / "model.safetensors", model / "model.safetensors")  # retrained in place
    with pytest.raises(ValueError) as err:
        run(files, out, model, bundled_tokenizer, steps=3)
    message = str(err.value)
    assert "\n" not in message and str(out) in message
    assert describe(saved) in message and describe(base_fingerprint(model)) in message
    assert "--overwrite" in message and "same base weights" in message
    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [1, 2]  # nothing trained, nothing moved

    shutil.copy(files["model"] / "model.safetensors", model / "model.safetensors")  # put back
    assert sorted(run(files, out, model, bundled_tokenizer, steps=3).losses) == [3]


def test_a_run_from_before_fingerprints_resumes_with_a_warning(files, tmp_path, bundled_tokenizer, capsys):
    out = tmp_path / "run"
    run(files, out, files["model"], bundled_tokenizer)
    for step in (1, 2):  # what the trainer wrote before fingerprints
        path = out / "checkpoints" / str(step) / "meta" / "metadata"
        meta = json.loads(path.read_text())
        del meta["base"]
        path.write_text(json.dumps(meta))
    capsys.readouterr()
    result = run(files, out, files["model"], bundled_tokenizer, steps=3)
    assert result.resumed_from == 2 and sorted(result.losses) == [3]
    (warning,) = [n for n in result.notes if "fingerprint" in n]
    assert str(out) in warning and "older run" in warning and describe(base_fingerprint(files["model"])) in warning
    assert f"train: {warning}" in capsys.readouterr().err
    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.read_meta(3)["base"] == base_fingerprint(files["model"])  # recorded from now on
