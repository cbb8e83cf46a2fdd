"""`agentrm export`: a trained run -> transformers' LlamaForSequenceClassification that scores like we do."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from agentrm_jax.records import Step, Trajectory, write_jsonl
from agentrm_jax.models import ModelConfig, init_model, save_pretrained
from agentrm_jax.rewards.io import load_value_model
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.export import export_run
from agentrm_jax.training.trainer import train, trained_model

TINY = ModelConfig.tiny(vocab_size=49152, hidden_size=48, intermediate_size=64, num_heads=4, num_kv_heads=2,
                        head_dim=12)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, bundled_tokenizer):
    root = tmp_path_factory.mktemp("export")
    save_pretrained(init_model(TINY, seed=3), root / "tiny")
    bundled_tokenizer.save_pretrained(str(root / "tiny"))
    trajs = [Trajectory(task="maze", instruction=f"Find key {i}",
                        steps=tuple(Step("", f"go {'north' if i % 2 else 'south'}", f"room {j}") for j in range(2)),
                        value=float(i % 2)) for i in range(8)]
    write_jsonl(root / "train.jsonl", trajs)
    config = TrainConfig(model=str(root / "tiny"), train=str(root / "train.jsonl"), finetune="lora", lora_rank=4,
                         steps=3, batch_size=4, lr=3e-2, warmup_steps=0, out=str(root / "run"), max_length=96)
    train(config, progress=False)
    return root, config


def test_exported_classifier_scores_like_the_trained_model_in_transformers(trained_run, bundled_tokenizer):
    import torch
    from transformers import AutoModelForSequenceClassification

    root, config = trained_run
    out = export_run(root / "run", root / "hf")
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["architectures"] == ["LlamaForSequenceClassification"] and hf_config["num_labels"] == 1
    texts = ["Thought: go\nAction: go north", "short"]
    enc = bundled_tokenizer(texts, return_tensors="np", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    last = mask.sum(1) - 1

    model, _ = trained_model(config, root / "run" / "checkpoints")  # adapters unmerged, straight from the checkpoint
    ours = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))[np.arange(2), last]
    assert np.any(np.asarray(model.backbone.layers[0].attn.q_proj_lora_b[...]) != 0), "LoRA was not trained"

    hf = AutoModelForSequenceClassification.from_pretrained(str(out), dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits[:, 0].numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

    loaded, loss, meta = load_value_model(out)  # and back into agentrm_jax
    again = np.asarray(loaded(jnp.asarray(ids), jnp.asarray(mask)))[np.arange(2), last]
    np.testing.assert_allclose(again, ours, atol=1e-5)
    assert loss == "mse" and meta["trained"]["step"] == 3 and meta["kind"] == "explicit"


def test_export_of_a_directory_without_checkpoints_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        export_run(tmp_path, tmp_path / "hf")


# ------------------------------------------------------------------------- where the export goes


def test_export_refuses_an_existing_non_empty_out(trained_run):
    root, _ = trained_run
    out = root / "taken"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError) as err:
        export_run(root / "run", out)
    message = str(err.value)
    assert "\n" not in message and str(out) in message and "config.json" in message and "--overwrite" in message
    assert (out / "config.json").read_text() == "{}"


def test_export_never_writes_over_a_training_run(trained_run):
    root, _ = trained_run
    with pytest.raises(ValueError, match="is a training run"):
        export_run(root / "run", root / "run", overwrite=True)
    assert (root / "run" / "checkpoints").is_dir()


def _partials(parent) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_a_failed_export_leaves_nothing_and_overwrite_replaces_only_when_complete(trained_run, monkeypatch):
    import agentrm_jax.training.export as export

    root, _ = trained_run
    real = export.save_value_model

    def fails_midway(model, directory, **kwargs):
        real(model, directory, **kwargs)  # every file written, then the disk "fills up"
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "save_value_model", fails_midway)
    with pytest.raises(OSError):
        export_run(root / "run", root / "new" / "hf")
    assert not (root / "new").exists()  # neither the export nor the parent it created
    old = root / "old_hf"
    old.mkdir()
    for name in ("config.json", "model.safetensors", "weights.bin"):  # an earlier model directory
        (old / name).write_text("previous model")
    with pytest.raises(OSError):
        export_run(root / "run", old, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "model.safetensors", "weights.bin"]
    assert (old / "config.json").read_text() == "previous model" and not _partials(root)

    monkeypatch.setattr(export, "save_value_model", real)
    out = export_run(root / "run", old, overwrite=True)
    assert out == old and (old / "config.json").read_text() != "previous model"
    assert not (old / "weights.bin").exists() and not _partials(root)

    # --overwrite never deletes a directory that is not a model's
    notes = root / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match=r"is not a model directory .*thesis\.tex.*will not delete it"):
        export_run(root / "run", notes, overwrite=True)
    assert (notes / "thesis.tex").read_text() == "years of work"


def test_export_of_a_damaged_checkpoint_names_the_step_and_file(trained_run, tmp_path):
    import shutil

    from agentrm_jax.training.checkpoint import CorruptCheckpointError

    root, _ = trained_run
    run = shutil.copytree(root / "run", tmp_path / "run")
    with open(run / "checkpoints" / "3" / "meta" / "metadata", "r+b") as f:
        f.truncate(11)
    with pytest.raises(CorruptCheckpointError) as err:
        export_run(run, tmp_path / "hf")
    assert "checkpoint step 3" in str(err.value) and "meta/metadata is not valid JSON" in str(err.value)
    assert not (tmp_path / "hf").exists()
