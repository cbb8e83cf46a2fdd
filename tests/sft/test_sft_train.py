"""`agentrm sft` on the shared trainer: a tiny model memorises four demos and replays them in the env;
the run is a policy (adapters unmerged == merged); the CLI reads its config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_helpers import demos, tiny_policy_dir, tiny_tokenizer, write_demos  # noqa: E402

from agentrm_jax.sft.config import SFTSection  # noqa: E402
from agentrm_jax.training.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    trajectories = demos("tool_query", range(4))
    tokenizer = tiny_tokenizer(trajectories)
    return dict(root=root, demos=trajectories, tokenizer=tokenizer, data=write_demos(root / "demos.jsonl", trajectories),
                model=tiny_policy_dir(root / "model", tokenizer))


def _config(setup, name, **values):
    base = dict(model=str(setup["model"]), kind="sft", finetune="full", steps=200, train=str(setup["data"]),
                batch_size=4, max_length=1024, lr=1e-2, warmup_steps=10, min_lr_ratio=0.1, weight_decay=0.0,
                save_every=1000, eval_every=0, out=str(setup["root"] / name))
    base.update(values)
    return TrainConfig(**base)


def test_a_tiny_model_memorises_four_demos_and_replays_them(setup):
    from agentrm_jax.agents.factory import make_env, make_policy
    from agentrm_jax.agents.loop import run_episode
    from agentrm_jax.sft.run import run_sft

    sft = SFTSection(eval_envs=("tool_query",), eval_seeds=4, eval_split="test")
    result = run_sft(_config(setup, "full"), sft, progress=False, tokenizer=setup["tokenizer"])
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert losses[0] > 3.0 and losses[-1] < 0.05, losses[::10]
    rows = [json.loads(l) for l in (result.out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["play_tool_query_success"] == 1.0 and rows[-1]["play_success"] == 1.0  # the trainer's eval
    policy = make_policy(str(result.out))  # the run directory is a policy
    for demo in setup["demos"]:
        played = run_episode(make_env("tool_query", split="test"), policy, seed=demo.meta["seed"])
        assert played.success
        assert [(s.thought, s.action) for s in played.steps] == [(s.thought, s.action) for s in demo.steps]


def test_lora_policy_unmerged_equals_merged(setup):
    import jax.numpy as jnp

    from agentrm_jax.models.adapters import load_policy
    from agentrm_jax.models.lora import has_lora, merge_lora
    from agentrm_jax.sft.run import run_sft

    result = run_sft(_config(setup, "lora", finetune="lora", steps=3, lr=5e-2, warmup_steps=0, lora_rank=4),
                     SFTSection(), progress=False, tokenizer=setup["tokenizer"])
    assert (result.out / "policy" / "adapters.safetensors").is_file()
    model, _ = load_policy(result.out)
    assert has_lora(model)
    ids = jnp.asarray(np.arange(1, 97, dtype=np.int32).reshape(2, 48) % len(setup["tokenizer"]))
    mask = jnp.ones(ids.shape, bool)
    unmerged = np.asarray(model(ids, mask))
    base, _ = load_policy(setup["model"])
    assert np.max(np.abs(unmerged - np.asarray(base(ids, mask)))) > 1e-3  # the adapters changed something
    merged = np.asarray(merge_lora(model)(ids, mask))
    np.testing.assert_allclose(unmerged, merged, atol=1e-5)


def test_make_policy_names_a_run_without_a_policy(setup, tmp_path):
    from agentrm_jax.agents.factory import make_policy

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"kind": "sft"}))
    with pytest.raises(FileNotFoundError, match="writes policy/ when it finishes"):
        make_policy(str(run))


def test_export_of_an_sft_run_is_a_causal_lm_transformers_loads(setup, tmp_path):
    import torch
    import jax.numpy as jnp
    from transformers import AutoModelForCausalLM

    from agentrm_jax.models.adapters import load_policy
    from agentrm_jax.training.export import export_run

    run = setup["root"] / "lora"
    if not (run / "policy").is_dir():
        pytest.fail("test_lora_policy_unmerged_equals_merged makes the run this test exports; run the module")
    out = export_run(run, tmp_path / "hf")
    ours, _ = load_policy(run)  # base + adapters, unmerged
    theirs = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = np.arange(3, 67, dtype=np.int64).reshape(2, 32) % len(setup["tokenizer"])
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    got = np.asarray(ours(jnp.asarray(ids, jnp.int32), jnp.ones(ids.shape, bool)))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    reloaded, _ = load_policy(out)  # and back into ours
    np.testing.assert_allclose(np.asarray(reloaded(jnp.asarray(ids, jnp.int32), jnp.ones(ids.shape, bool))), got,
                               atol=1e-4)
