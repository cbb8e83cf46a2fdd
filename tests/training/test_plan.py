"""`agentrm train --plan`: both paper configs fit their devices, the plan's parameter / optimizer /
reference bytes are those a real TrainStep holds on its device, a run too big for its device is said so
(exit 1), and a backbone that is not on this machine is planned from compute.architecture or refused in
one line."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest

from agentrm_jax.cli import main
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.mesh import training_mesh
from agentrm_jax.training.model import build_model
from agentrm_jax.training.plan import GIB, KNOWN_DEVICES, memory_plan
from agentrm_jax.training.step import TrainStep
from trainer_helpers import save_tiny_model, tiny_model

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "configs").glob("train_paper_8b_*.yaml"))


def plan_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["train", *argv, "--plan", "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_the_paper_configs_fit_their_devices(path, capsys):
    code, plan = plan_json(capsys, "--config", str(path))
    assert code == 0 and plan["fits"] is True, plan
    config = TrainConfig.from_yaml(path)
    assert plan["device_memory_bytes"] == KNOWN_DEVICES[config.compute.device] * GIB
    assert plan["per_device_bytes"] == sum(plan["parts"].values()) <= plan["usable_bytes"]
    assert plan["num_params"] == 8_030_261_248  # Llama-3.1-8B
    # sharded 8 (fsdp) or 32 (fsdp x tensor) ways: float32 weights / devices
    split = config.mesh.fsdp * config.mesh.tensor
    # (norm weights and the value head stay whole on every device: ~1 MB)
    assert plan["parts"]["params"] == pytest.approx(8_030_261_248 * 4 / split, rel=2e-3)
    assert plan["parts"]["optimizer_state"] == pytest.approx(2 * plan["parts"]["params"], rel=1e-3)
    assert plan["parts"]["activations"] > 0 and plan["replicated_fraction"] == 0.0


def live_bytes(tree, device) -> int:
    return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array)
               for s in leaf.addressable_shards if s.device == device)


@pytest.mark.parametrize("kind, finetune", [("explicit", "lora"), ("implicit", "full")])
def test_the_planned_weights_are_what_a_real_step_holds(tmp_path, bundled_tokenizer, kind, finetune):
    model_dir = save_tiny_model(tmp_path / "m", bundled_tokenizer)
    config = TrainConfig(model=str(model_dir), train="unused.jsonl", kind=kind, finetune=finetune, lora_rank=2,
                         batch_size=4, max_length=64, steps=3)
    plan = memory_plan(config)
    mesh = training_mesh(config.mesh, devices=jax.devices()[:1])
    model, trainable_filter = build_model(config, backbone=tiny_model(), mesh=mesh)
    step = TrainStep(model, trainable_filter, config, mesh, total_steps=3)
    device = jax.devices()[0]
    parts = plan.parts
    assert parts["params"] == live_bytes(step.initial_trainable, device) + live_bytes(step.frozen, device)
    assert parts["optimizer_state"] == live_bytes(step.init_opt_state(step.initial_trainable), device)
    assert parts["reference"] == live_bytes(step.reference, device)
    assert (parts["reference"] > 0) == (finetune == "full")
    assert parts["gradients"] == live_bytes(step.initial_trainable, device)
    assert plan.rows_per_device == 4 and plan.length == 64


def test_a_run_too_big_for_its_device_says_so(capsys):
    config = str(REPO / "configs/train_paper_8b_v5e64.yaml")
    code, plan = plan_json(capsys, "--config", config, "--mesh", "data=64,fsdp=1,tensor=1")
    assert code == 1 and plan["fits"] is False  # nothing sharded: 8B x 16 bytes on every 16 GiB chip
    assert plan["parts"]["params"] == pytest.approx(8_030_261_248 * 4, rel=1e-3)
    assert main(["train", "--config", config, "--mesh", "data=64,fsdp=1,tensor=1", "--plan"]) == 1
    text = capsys.readouterr().out
    assert "fits: false" in text and "v5e: 16.00 GiB" in text and "optimizer_state" in text


def test_a_missing_backbone_needs_its_architecture(tmp_path, bundled_tokenizer, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model: /nowhere/Llama\ndata:\n  train: a.jsonl\n")
    assert main(["train", "--config", str(path), "--plan"]) not in (0, None)
    err = capsys.readouterr().err
    assert "/nowhere/Llama is not on this machine" in err and "compute.architecture" in err
    assert "Traceback" not in err
    model_dir = save_tiny_model(tmp_path / "m", bundled_tokenizer)
    with pytest.raises(ValueError, match=r"architecture='llama-3.1-8b' does not match .*hidden_size 4096 vs 48"):
        memory_plan(TrainConfig(model=str(model_dir), train="a.jsonl", architecture="llama-3.1-8b"))
