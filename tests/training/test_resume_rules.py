"""What may change when a run is resumed: how a step is computed (grad_accum, remat, scanned layers; the mesh
likewise, restored onto by the checkpointer) may, what it computes may not."""

from __future__ import annotations

import pytest

from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.trainer import train
from trainer_helpers import tiny_model, write_trajectories


def config(tmp_path, **overrides) -> TrainConfig:
    values = dict(train=str(write_trajectories(tmp_path / "t.jsonl", 8)), kind="explicit", finetune="lora",
                  lora_rank=2, steps=2, batch_size=4, lr=1e-2, warmup_steps=0, max_length=64, save_every=1,
                  out=str(tmp_path / "run"))
    values.update(overrides)
    return TrainConfig(**values)


def test_grad_accum_and_the_compute_section_may_change_on_resume(tmp_path, bundled_tokenizer):
    first = train(config(tmp_path), backbone=tiny_model(), tokenizer=bundled_tokenizer, progress=False)
    assert sorted(first.losses) == [1, 2]
    resumed = train(config(tmp_path, steps=3, grad_accum=2, remat="full", scan_layers=True), backbone=tiny_model(),
                    tokenizer=bundled_tokenizer, progress=False)
    assert resumed.resumed_from == 2 and sorted(resumed.losses) == [3]


def test_what_a_step_computes_may_not_change(tmp_path, bundled_tokenizer):
    train(config(tmp_path), backbone=tiny_model(), tokenizer=bundled_tokenizer, progress=False)
    with pytest.raises(ValueError, match=r"lora_rank=2.*lora_rank=4"):
        train(config(tmp_path, steps=3, lora_rank=4), backbone=tiny_model(), tokenizer=bundled_tokenizer,
              progress=False)
