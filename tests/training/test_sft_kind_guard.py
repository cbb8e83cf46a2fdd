"""`kind: sft` needs the demo renderer of `agentrm sft`: the RM trainer alone refuses it in one line."""

from __future__ import annotations

import pytest

from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.trainer import train


def test_train_without_the_sft_renderer_refuses_kind_sft(tmp_path):
    config = TrainConfig(kind="sft", train=str(tmp_path / "demos.jsonl"), model="bundled", finetune="lora",
                         out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="agentrm sft"):
        train(config, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written
