"""How the trainer builds its model: `config.compute` (remat, scanned layers, attention kernel) reaches the
backbone and changes how the step runs but not its numbers, and a backbone read from disk is built straight
into its training shardings on the run's mesh (8 fake CPU devices, in a subprocess: no weight is ever put
whole on one device)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from agentrm_jax.training import trainer
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.mesh import training_mesh
from agentrm_jax.training.model import build_model
from agentrm_jax.training.step import TrainStep
from trainer_helpers import result_line, run_script, save_tiny_model, tiny_model, write_trajectories

HERE = Path(__file__).resolve().parent
ROWS, LENGTH = 4, 32


def host_batch():
    rng = np.random.default_rng(1)
    return {"input_ids": rng.integers(0, 49152, (ROWS, LENGTH)).astype(np.int32),
            "attention_mask": np.ones((ROWS, LENGTH), bool), "agent_mask": np.ones((ROWS, LENGTH), bool),
            "target_index": np.full((ROWS, 1), LENGTH - 1, np.int32),
            "targets": rng.uniform(size=(ROWS, 1)).astype(np.float32),
            "labels": np.zeros((ROWS,), np.float32), "weights": np.ones((ROWS,), np.float32)}


def two_step_losses(**compute):
    config = TrainConfig(train="unused.jsonl", kind="explicit", finetune="full", steps=2, batch_size=ROWS, lr=1e-2,
                         warmup_steps=0, **compute)
    mesh = training_mesh(config.mesh, devices=jax.devices()[:1])
    model, trainable_filter = build_model(config, backbone=tiny_model(num_layers=3), mesh=mesh)
    step = TrainStep(model, trainable_filter, config, mesh, total_steps=2)
    trainable = step.initial_trainable
    opt_state = step.init_opt_state(trainable)
    jaxpr = str(jax.make_jaxpr(step._step_fn)(trainable, opt_state, step.frozen, step.reference,
                                              step.put_batch(host_batch())))
    losses = []
    for _ in range(2):
        trainable, opt_state, metrics = step.step(trainable, opt_state, step.put_batch(host_batch()))
        losses.append(float(metrics["loss"]))
    return model.backbone.config, jaxpr, losses


def test_the_compute_section_reaches_the_backbone_and_keeps_the_numbers():
    plain_config, plain_jaxpr, plain = two_step_losses()
    config, jaxpr, losses = two_step_losses(remat="full", scan_layers=True)
    assert (plain_config.remat, plain_config.scan_layers) == ("none", False)
    assert (config.remat, config.scan_layers, config.attention_impl) == ("full", True, "grouped")
    assert "remat" not in plain_jaxpr and "scan" not in plain_jaxpr
    assert "remat" in jaxpr and "scan" in jaxpr  # the step really runs checkpointed, scanned layers
    assert "policy=None" in jaxpr  # remat "full": nothing saved
    assert plain[1] != plain[0]
    np.testing.assert_allclose(losses, plain, rtol=0, atol=1e-5)  # a second step: the gradients agree too
    _, dots_jaxpr, dots = two_step_losses(remat="dots_saveable", attention="dot_product")
    assert "policy=DotsSaveable" in dots_jaxpr and "policy=None" not in dots_jaxpr
    np.testing.assert_allclose(dots, plain, rtol=0, atol=1e-5)


def test_train_builds_the_model_on_its_own_mesh(tmp_path, bundled_tokenizer, monkeypatch):
    seen = {}
    real = trainer.build_model

    def recording(config, **kwargs):
        seen.update(kwargs)
        return real(config, **kwargs)

    monkeypatch.setattr(trainer, "build_model", recording)
    config = TrainConfig(model=str(save_tiny_model(tmp_path / "m", bundled_tokenizer)), kind="explicit",
                         finetune="head", steps=1, batch_size=4, max_length=64, out=str(tmp_path / "run"),
                         train=str(write_trajectories(tmp_path / "t.jsonl", 4)))
    trainer.train(config, tokenizer=bundled_tokenizer, progress=False)
    assert isinstance(seen["mesh"], jax.sharding.Mesh)
    assert dict(seen["mesh"].shape) == {"data": 1, "fsdp": 1, "tensor": 1}


LOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from flax import nnx
    from agentrm_jax.models import bundled_model_path, load_tokenizer
    from agentrm_jax.training.config import MeshShape, TrainConfig
    from agentrm_jax.training.mesh import training_mesh
    from agentrm_jax.training.model import build_model
    from trainer_helpers import save_tiny_model

    assert jax.device_count() == 8
    directory = save_tiny_model(sys.argv[2], load_tokenizer(bundled_model_path()))
    config = TrainConfig(model=str(directory), kind="explicit", finetune="full", train="unused.jsonl",
                         mesh=MeshShape(1, 8, 1), batch_size=8, remat="full")
    mesh = training_mesh(config.mesh)
    whole = []  # host arrays of more than 4 KiB handed to jax whole (device_put / asarray)
    for name in ("device_put", "numpy.asarray", "numpy.array"):
        owner, attr = (jax, name) if "." not in name else (jax.numpy, name.split(".")[1])
        original = getattr(owner, attr)
        def spy(x, *a, _original=original, _name=name, **k):
            if isinstance(x, np.ndarray) and x.nbytes > 4096:
                whole.append([_name, list(x.shape)])
            return _original(x, *a, **k)
        setattr(owner, attr, spy)
    model, _ = build_model(config, mesh=mesh)
    params = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    print("RESULTS" + json.dumps(dict(
        whole=whole, remat=model.backbone.config.remat,
        embed=dict(spec=[a for a in params["backbone.embed"].sharding.spec],
                   shard=list(params["backbone.embed"].addressable_shards[0].data.shape),
                   devices=len(params["backbone.embed"].sharding.device_set)),
        mesh_of_all=all(getattr(v.sharding, "mesh", None) == mesh for k, v in params.items()
                        if k.startswith("backbone.")))))
""")


@pytest.fixture(scope="module")
def sharded_load(tmp_path_factory):
    return result_line(run_script(LOAD_SCRIPT, str(HERE), str(tmp_path_factory.mktemp("load") / "m"), devices=8))


def test_a_backbone_from_disk_is_built_straight_into_its_shards(sharded_load):
    r = sharded_load
    assert r["whole"] == []  # no weight went to a device whole, to be resharded afterwards
    assert r["mesh_of_all"] and r["remat"] == "full"
    assert r["embed"] == {"spec": ["tensor", "fsdp"], "shard": [49152, 6], "devices": 8}
