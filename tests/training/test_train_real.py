"""The trainer on the bundled SmolLM2 and real data: the bundled policy's own rollouts (configs/data/)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.trainer import train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.real_model
def test_explicit_rm_loss_goes_down_on_the_bundled_policys_rollouts(tmp_path, bundled_ours):
    model, tokenizer = bundled_ours
    eval_path = tmp_path / "eval.jsonl"
    with open(REPO / "configs/data/smollm2_rollouts_eval.jsonl", encoding="utf-8") as f:
        eval_path.write_text("".join(itertools.islice(f, 12)))
    config = TrainConfig.from_yaml(REPO / "configs/train_cpu.yaml", {
        "steps": 8, "batch_size": 4, "max_length": 192, "lr": 3e-3, "eval": str(eval_path),
        "out": str(tmp_path / "run"), "save_every": 8})
    assert config.finetune == "head" and config.target == "progress"
    with pytest.warns(UserWarning, match="exceeded max_length=192"):
        result = train(config, progress=False, backbone=model, tokenizer=tokenizer)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:2]) / 2, losses
    assert set(result.eval) == {"eval_loss", "eval_mse"} and result.eval["eval_mse"] < losses[0]
    assert (tmp_path / "run" / "checkpoints" / "8").is_dir()
