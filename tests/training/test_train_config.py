"""TrainConfig: every shipped YAML parses, the nested layout round-trips, the flat layout of older runs and
of override dicts still reads, nested keys are reported at their file:line, and importing the config pulls
in no jax / flax / grain."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.sections import DataConfig, OptimizerSection

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("train_*.yaml"))

# What the trainer wrote as train_config.json before the sections (every field, flat).
LEGACY = {"model": "bundled", "kind": "explicit", "train": "a.jsonl", "eval": None, "target": "progress",
          "loss": "mse", "beta": 0.05, "margin": 0.0, "finetune": "lora", "lora_rank": 4, "lora_alpha": 16.0,
          "lora_targets": ["q_proj", "v_proj"], "head_mlp": 0, "batch_size": 8, "grad_accum": 2,
          "max_length": 256, "steps": 30, "epochs": None, "lr": 0.001, "warmup_steps": 3, "min_lr_ratio": 0.1,
          "weight_decay": 0.01, "b1": 0.9, "b2": 0.999, "grad_clip": 1.0, "precision": "float32",
          "mesh": "data=1,fsdp=1,tensor=1", "seed": 7, "out": "runs/old", "save_every": 10, "keep": 2,
          "eval_every": 10, "log_every": 1}

# The compute section (added later): an old run reads with its defaults, today's forward.
COMPUTE_DEFAULTS = {"remat": "none", "scan_layers": False, "attention": "grouped", "device": None,
                    "device_memory_gb": None, "architecture": None}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_train_config_parses_and_round_trips(path):
    config = TrainConfig.from_yaml(path)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # train_config.json


def test_a_legacy_flat_dict_reads_into_the_sections():
    config = TrainConfig.from_dict(LEGACY)
    assert config.data == DataConfig(kind="explicit", train="a.jsonl", target="progress", batch_size=8,
                                     max_length=256, seed=7)
    assert config.optimizer.grad_accum == 2 and config.lora.targets == ("q_proj", "v_proj")
    assert config.lora.rank == 4 and config.outputs.save_every == 10
    assert config.to_flat_dict() == {**LEGACY, "min_length_bucket": 32, "head_init": "normal", **COMPUTE_DEFAULTS}
    nested = config.to_dict()
    assert nested["kind"] == "explicit" and nested["steps"] == 30 and nested["model"] == "bundled"
    assert nested["optimizer"]["lr"] == 0.001 and nested["data"]["train"] == "a.jsonl"


def test_flat_names_build_and_read_the_sections():
    flat = TrainConfig(train="a.jsonl", lr=1e-3, lora_rank=2, grad_accum=2, kind="pairwise", seed=3)
    nested = TrainConfig(data=DataConfig(kind="pairwise", train="a.jsonl", seed=3),
                         optimizer=OptimizerSection(lr=1e-3, grad_accum=2), lora_rank=2)
    assert flat == nested
    assert (flat.lr, flat.lora_rank, flat.kind, flat.seed, flat.train) == (1e-3, 2, "pairwise", 3, "a.jsonl")
    assert flat.replace(lr=5e-3).optimizer.lr == 5e-3
    with pytest.raises(TypeError, match="learning_rate"):
        TrainConfig(train="a.jsonl", learning_rate=1e-3)


def test_flat_overrides_apply_on_top_of_a_nested_yaml():
    config = TrainConfig.from_yaml(REPO / "configs/train_cpu.yaml",
                                   {"steps": 8, "out": "runs/try", "lr": 1e-3, "batch_size": 4, "mesh": None})
    assert (config.steps, config.out, config.optimizer.lr, config.data.batch_size) == (8, "runs/try", 1e-3, 4)
    assert str(config.mesh) == "data=1,fsdp=1,tensor=1"
    epochs = TrainConfig.from_yaml(REPO / "configs/train_cpu.yaml", {"epochs": 2})
    assert (epochs.steps, epochs.epochs) == (None, 2.0)


@pytest.mark.parametrize("text, line, message", [
    ("data:\n  train: a.jsonl\noptimizer:\n  lr: 1e-3\n  learning_rate: 0.1\n", 5,
     "unknown key 'learning_rate' in train config section 'optimizer'"),
    ("data:\n  train: a.jsonl\noptimizer:\n  lr: -1\n", 4, "TrainConfig.optimizer.lr must be > 0"),
    ("kind: explicit\ndata:\n  train: a.jsonl\n  batch_size: 0\n", 4, "DataConfig.batch_size must be"),
    ("data:\n  train: a.jsonl\n  batch_size: 6\noptimizer:\n  grad_accum: 4\n", 5,
     "TrainConfig.optimizer.grad_accum must divide data.batch_size=6"),
    ("data:\n  kind: explicit\n  train: a.jsonl\n", 2, "kind is a top-level key"),
    ("lr: 0.1\ndata:\n  train: a.jsonl\noptimizer:\n  lr: 0.2\n", 5, "optimizer.lr is given twice"),
    ("data:\n  train: a.jsonl\nmesh: data=2,fsdp=x\n", 3, "'fsdp=x' is not AXIS=SIZE"),
    ("data:\n  train: a.jsonl\nlora: 3\n", 3, "lora is a section"),
    ("data:\n  train: a.jsonl\nlearning_rate: 3\n", 3, "unknown key 'learning_rate' in train config;"),
])
def test_a_bad_key_is_reported_at_its_line(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(message)):
        TrainConfig.from_yaml(path)


def test_importing_the_config_pulls_in_no_jax_flax_or_grain():
    code = ("import sys, agentrm_jax.training, agentrm_jax.training.config; "
            "print(sorted(m for m in ('jax', 'flax', 'grain', 'optax', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_compute_section_reads_nested_and_flat(tmp_path):
    path = tmp_path / "compute.yaml"
    path.write_text("data:\n  train: a.jsonl\ncompute:\n  remat: full\n  scan_layers: true\n  attention: dot_product\n"
                    "  device: H100-80GB\n  device_memory_gb: 40\n")
    config = TrainConfig.from_yaml(path, {"remat": "dots_saveable"})
    assert (config.compute.remat, config.scan_layers, config.attention) == ("dots_saveable", True, "dot_product")
    assert config.compute.device == "H100-80GB" and config.device_memory_gb == 40.0
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["compute"]["remat"] == "dots_saveable"
    bad = tmp_path / "bad_remat.yaml"
    bad.write_text("data:\n  train: a.jsonl\ncompute:\n  remat: some\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:4: ") + ".*compute.remat must be one of none, full"):
        TrainConfig.from_yaml(bad)


def test_the_compute_choices_are_the_models_own():
    from agentrm_jax.models.config import ATTENTION_IMPLS, REMAT_POLICIES
    from agentrm_jax.training.sections import ATTENTION, REMAT

    assert (REMAT, ATTENTION) == (REMAT_POLICIES, ATTENTION_IMPLS)
