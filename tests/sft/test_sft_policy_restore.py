"""Writing a run's policy reads the checkpoint's params only: the optimizer state (AdamW's two moments, twice
the trained weights; at 8B full fine-tuning 64 GB) is never restored, so a policy can be written on a host
that could not hold the training state."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_helpers import demos, tiny_policy_dir, tiny_tokenizer, write_demos  # noqa: E402

from agentrm_jax.sft.config import SFTSection  # noqa: E402
from agentrm_jax.training.config import TrainConfig  # noqa: E402


def test_a_partial_restore_reads_the_params_alone(tmp_path):
    from agentrm_jax.training.checkpoint import Checkpointer

    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = {"w": jnp.arange(12.0).reshape(3, 4), "n": np.arange(3)}
    state = {"params": params, "opt_state": {"mu": jnp.ones((3, 4)), "nu": jnp.full((3, 4), 2.0), "count": 7}}
    with Checkpointer(tmp_path / "ck") as ckpt:
        ckpt.save(1, state, data_state={"epoch": 0}, meta={"step": 1})
        target = {"params": {"w": jax.ShapeDtypeStruct((3, 4), jnp.bfloat16, sharding=one), "n": np.zeros(3, np.int64)}}
        with pytest.raises(ValueError, match=r"the checkpoint has 'opt_state/.*', which the target lacks"):
            ckpt.restore(1, target)  # a whole restore wants the whole tree
        got, data_state, meta = ckpt.restore(1, target, partial=True)
    assert set(got) == {"params"} and set(got["params"]) == {"w", "n"}
    assert got["params"]["w"].dtype == jnp.bfloat16 and isinstance(got["params"]["n"], np.ndarray)
    np.testing.assert_array_equal(np.asarray(got["params"]["w"], np.float32), np.asarray(params["w"]))
    np.testing.assert_array_equal(got["params"]["n"], params["n"])
    assert (data_state, meta) == ({"epoch": 0}, {"step": 1})
    with Checkpointer(tmp_path / "ck") as ckpt:  # a part the checkpoint lacks is still named
        with pytest.raises(ValueError, match=r"the target has 'params/v', which the checkpoint lacks"):
            ckpt.restore(1, {"params": {"v": jax.ShapeDtypeStruct((3,), jnp.float32, sharding=one)}}, partial=True)


def test_write_policy_needs_no_optimizer_state(tmp_path):
    """The run trained with gradient clipping (optax.chain of clip and AdamW: two optimizer-state parts);
    writing its policy under a config without clipping (one part) still works, so the optimizer state
    is not what write_policy restores; and the policy it writes is the one the run wrote."""
    from agentrm_jax.models.adapters import load_policy
    from agentrm_jax.sft.run import run_sft, write_policy

    trajectories = demos("tool_query", range(2))
    tokenizer = tiny_tokenizer(trajectories)
    model_dir = tiny_policy_dir(tmp_path / "model", tokenizer)
    config = TrainConfig(model=str(model_dir), kind="sft", finetune="full", steps=2, batch_size=2, max_length=1024,
                         train=str(write_demos(tmp_path / "demos.jsonl", trajectories)), lr=1e-2, warmup_steps=0,
                         grad_clip=1.0, eval_every=0, out=str(tmp_path / "run"))
    result = run_sft(config, SFTSection(), progress=False, tokenizer=tokenizer)
    ids = jnp.asarray(np.arange(1, 33, dtype=np.int32).reshape(1, 32))
    mask = jnp.ones(ids.shape, bool)
    written, _ = load_policy(result.out)
    expected = np.asarray(written(ids, mask))

    other = dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, grad_clip=0.0))
    again = write_policy(other, SFTSection(), tokenizer=tokenizer)
    rewritten, _ = load_policy(again)
    np.testing.assert_array_equal(np.asarray(rewritten(ids, mask)), expected)
    base, _ = load_policy(model_dir)
    assert np.max(np.abs(np.asarray(base(ids, mask)) - expected)) > 1e-4  # the trained weights, not the base's
