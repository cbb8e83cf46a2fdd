"""`agentrm score --rm RUN_DIR`: a training run directory is scored from its latest checkpoint (as its export
scores), never misread as an HF model; `load_value_model` names the export command instead."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from trainer_helpers import save_tiny_model, tiny_model, write_trajectories  # noqa: E402

from agentrm_jax.records import read_jsonl# noqa: E402
from agentrm_jax.cli import main  # noqa: E402
from agentrm_jax.rewards import ExplicitRM, load_value_model  # noqa: E402
from agentrm_jax.rewards.io import training_run  # noqa: E402
from agentrm_jax.training.config import TrainConfig  # noqa: E402
from agentrm_jax.training.export import export_run  # noqa: E402
from agentrm_jax.training.trainer import train  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory, bundled_tokenizer):
    """A finished 2-step head-only explicit run on the tiny model, its data, and its export."""
    root = tmp_path_factory.mktemp("score_run")
    data = write_trajectories(root / "data.jsonl", 8)
    config = TrainConfig(model=str(save_tiny_model(root / "model", bundled_tokenizer)), train=str(data),
                         kind="explicit", finetune="head", steps=2, batch_size=4, lr=5e-2, warmup_steps=0,
                         max_length=64, out=str(root / "run"))
    train(config, backbone=tiny_model(), tokenizer=bundled_tokenizer, progress=False)
    return root, data, export_run(root / "run", root / "hf")


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _legacy_copy(run_dir: Path, to: Path) -> Path:
    """The run as the trainer wrote it before train_config.json: its train config named config.json."""
    shutil.copytree(run_dir, to)
    if (to / "train_config.json").exists():
        (to / "train_config.json").rename(to / "config.json")
    return to


def test_a_run_directory_scores_like_its_export(run, tmp_path, bundled_tokenizer, capsys):
    root, data, exported = run
    model, loss, _ = load_value_model(exported)
    trajectories = read_jsonl(data)
    expected, steps = ExplicitRM(model, bundled_tokenizer, loss=loss).score_with_steps(trajectories)
    legacy = _legacy_copy(root / "run", tmp_path / "legacy")
    for i, rm in enumerate((root / "run", root / "run" / "checkpoints", legacy)):
        out = tmp_path / f"s{i}.jsonl"
        assert main(["score", "--rm", str(rm), "--input", str(data), "--output", str(out)]) == 0, \
            capsys.readouterr().err
        rows = _rows(out)
        np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-5)
        np.testing.assert_allclose([r["step_scores"][-1] for r in rows], [s[-1] for s in steps], atol=1e-5)
        meta = json.loads((tmp_path / f"s{i}.jsonl.meta.json").read_text())
        assert meta["rm"]["step"] == 2 and meta["dtype"] == "float32"
    # the export is a different set of files from the run: not resumed into the run's output
    assert main(["score", "--rm", str(exported), "--input", str(data), "--output", str(tmp_path / "s0.jsonl")]) == 2
    assert "different reward model" in capsys.readouterr().err


def test_load_value_model_names_the_export_command_for_a_run(run, tmp_path, capsys):
    root, data, exported = run
    legacy = _legacy_copy(root / "run", tmp_path / "legacy")
    for run_dir in (root / "run", legacy):
        assert training_run(run_dir) == run_dir
        with pytest.raises(ValueError) as err:
            load_value_model(run_dir)
        assert str(err.value) == (f"{run_dir} is a training run, not an exported reward model: run `agentrm "
                                  f"export --ckpt {run_dir} --out {run_dir / 'hf'}` and score that")
    assert training_run(exported) is None and training_run(root / "model") is None
    # an implicit-kind scorer given a run as its policy says the same, in one line
    code = main(["score", "--rm-kind", "implicit", "--policy", str(root / "run"), "--reference", str(root / "model"),
                 "--input", str(data), "--output", str(tmp_path / "i.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is a training run, not an exported reward model" in err and "\n" not in err
    # a run with no checkpoint yet
    empty = tmp_path / "empty_run"
    empty.mkdir()
    shutil.copy(_legacy_copy(root / "run", tmp_path / "l2") / "config.json", empty / "train_config.json")
    code = main(["score", "--rm", str(empty), "--input", str(data), "--output", str(tmp_path / "e.jsonl")])
    assert code == 2 and "no checkpoint yet" in capsys.readouterr().err
