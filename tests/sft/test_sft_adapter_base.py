"""LoRA adapters know their base: adapters.json records the fingerprint of the weights they were trained on
(the run's checkpoint's, from `models.base_fingerprint`), and loading them over a base that now holds other
weights is refused in one line naming both."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_helpers import demos, tiny_policy_dir, tiny_tokenizer, write_demos  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(demos("tool_query", range(2)))


def _adapters(tmp_path, tokenizer, base):
    from agentrm_jax.models.adapters import load_policy, save_adapters
    from agentrm_jax.models.lora import add_lora

    model, _ = load_policy(base)
    add_lora(model, rank=2, alpha=4.0, seed=1)
    return save_adapters(model, tmp_path / "adapters", base=str(base), rank=2, alpha=4.0)


def test_adapters_over_other_base_weights_are_refused_in_one_line(tmp_path, tokenizer):
    from agentrm_jax.models.adapters import load_policy
    from agentrm_jax.models.base_fingerprint import base_fingerprint, describe
    from agentrm_jax.models.lora import has_lora

    base = tiny_policy_dir(tmp_path / "base", tokenizer, seed=0)
    adapters = _adapters(tmp_path, tokenizer, base)
    recorded = json.loads((adapters / "adapters.json").read_text())["base_fingerprint"]
    assert recorded == base_fingerprint(base)
    assert has_lora(load_policy(adapters)[0])  # the base it was trained on: loads

    tiny_policy_dir(base, tokenizer, seed=1)  # same architecture, other weights, same path
    with pytest.raises(ValueError) as err:
        load_policy(adapters)
    message = str(err.value)
    assert "\n" not in message and "adapters.json: these adapters were trained on base weights" in message
    assert describe(recorded) in message and describe(base_fingerprint(base)) in message
    assert "model.safetensors:" in message  # what changed


def test_adapters_without_a_fingerprint_load_with_a_warning(tmp_path, tokenizer):
    from agentrm_jax.models.adapters import load_policy

    base = tiny_policy_dir(tmp_path / "base", tokenizer, seed=0)
    adapters = _adapters(tmp_path, tokenizer, base)
    meta = json.loads((adapters / "adapters.json").read_text())
    del meta["base_fingerprint"]  # as written before fingerprints were recorded
    (adapters / "adapters.json").write_text(json.dumps(meta))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_policy(adapters)
    assert any("records no fingerprint of its base weights" in str(w.message) for w in caught)


def test_an_sft_run_records_the_fingerprint_its_checkpoint_took(tmp_path, tokenizer):
    from agentrm_jax.sft.config import SFTSection
    from agentrm_jax.sft.run import run_sft
    from agentrm_jax.training.checkpoint import read_meta
    from agentrm_jax.training.config import TrainConfig

    trajectories = demos("tool_query", range(2))
    base = tiny_policy_dir(tmp_path / "base", tokenizer, seed=0)
    config = TrainConfig(model=str(base), kind="sft", finetune="lora", lora_rank=2, steps=1, batch_size=2,
                         max_length=1024, train=str(write_demos(tmp_path / "demos.jsonl", trajectories)),
                         eval_every=0, out=str(tmp_path / "run"))
    result = run_sft(config, SFTSection(), progress=False, tokenizer=tokenizer)
    recorded = json.loads((result.out / "policy" / "adapters.json").read_text())["base_fingerprint"]
    assert recorded == read_meta(result.out / "checkpoints")["base"] and recorded["files"]
