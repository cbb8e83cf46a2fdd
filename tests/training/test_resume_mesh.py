"""A run resumed onto another mesh: trained on (1, 8, 1) over 8 fake CPU devices and stopped after step 2,
it resumes on (2, 2, 2) and on one device (the checkpointer restores parameters and AdamW state into the
new mesh's shardings), and its losses go on like the uninterrupted run's (1e-5; only the reduction order
differs between meshes). Full fine-tuning, so the sharded tables (embed over fsdp, vocab over tensor) and
their optimizer moments are what moves. One subprocess: XLA_FLAGS must be set before jax starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from trainer_helpers import result_line, run_script

HERE = Path(__file__).resolve().parent

RESUME_SCRIPT = textwrap.dedent("""
    import json, shutil, sys
    import jax
    sys.path.insert(0, sys.argv[1])
    from trainer_helpers import tiny_model, write_trajectories
    from agentrm_jax.models import bundled_model_path, load_tokenizer
    from agentrm_jax.training import trainer
    from agentrm_jax.training.checkpoint import Checkpointer
    from agentrm_jax.training.config import MeshShape, TrainConfig
    from agentrm_jax.training.mesh import training_mesh

    assert jax.device_count() == 8, jax.devices()
    root = sys.argv[2]
    tokenizer = load_tokenizer(bundled_model_path())
    data = str(write_trajectories(f"{root}/train.jsonl", 16))
    every_device = trainer.training_mesh

    class RecordingStep(trainer.TrainStep):
        # the parameters the jitted step returned last, to read where they live
        last = None

        def step(self, trainable, opt_state, batch):
            result = super().step(trainable, opt_state, batch)
            RecordingStep.last = result
            return result

    trainer.TrainStep = RecordingStep

    def train(shape, out):
        trainer.training_mesh = ((lambda s: training_mesh(s, devices=jax.devices()[:1])) if shape == (1, 1, 1)
                                 else every_device)
        config = TrainConfig(train=data, kind="explicit", finetune="full", steps=4, batch_size=8, lr=1e-2,
                             warmup_steps=1, max_length=64, mesh=MeshShape(*shape), out=out, save_every=1, keep=4)
        result = trainer.train(config, backbone=tiny_model(), tokenizer=tokenizer, progress=False)
        params, opt_state, _ = RecordingStep.last
        devices = sorted({len(x.sharding.device_set) for x in jax.tree.leaves((params, opt_state))})
        return dict(losses={str(s): v for s, v in result.losses.items()}, resumed_from=result.resumed_from,
                    devices=devices)

    results = {"uninterrupted": train((1, 8, 1), f"{root}/uninterrupted")}
    for name, shape in (("on_2x2x2", (2, 2, 2)), ("on_one_device", (1, 1, 1))):
        # what a run stopped after step 2 leaves: checkpoints 1-2 and metrics rows past them
        out = shutil.copytree(f"{root}/uninterrupted", f"{root}/{name}")
        for step in (3, 4):
            shutil.rmtree(f"{out}/checkpoints/{step}")
        results[name] = train(shape, out)
    print("RESULTS" + json.dumps(results))
""")


def test_a_run_resumes_onto_another_mesh_with_the_same_losses(tmp_path):
    results = result_line(run_script(RESUME_SCRIPT, str(HERE), str(tmp_path), devices=8))
    straight = results["uninterrupted"]
    assert straight["resumed_from"] is None and sorted(straight["losses"]) == ["1", "2", "3", "4"]
    assert straight["devices"] == [8]
    for name, devices in (("on_2x2x2", [8]), ("on_one_device", [1])):
        resumed = results[name]
        assert resumed["resumed_from"] == 2 and sorted(resumed["losses"]) == ["3", "4"], name
        assert resumed["devices"] == devices, name  # the restored state lives on the new mesh
        np.testing.assert_allclose([resumed["losses"][s] for s in ("3", "4")],
                                   [straight["losses"][s] for s in ("3", "4")], rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    # the loss moved between steps 2 and 4, so agreement is not the trivial kind
    assert abs(straight["losses"]["4"] - straight["losses"]["1"]) > 1e-3
