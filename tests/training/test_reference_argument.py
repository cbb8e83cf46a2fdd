"""The implicit PRM's reference pi_ref is an argument of the jitted step, never a constant compiled into it:
the lowered step holds no constant larger than a few KB (full fine-tuning copied 16 weight tensors into the
program before), the reference is placed like the trained weights, stays at the initial weights while the
policy trains, and under LoRA stays "the same weights with the adapters zeroed"."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
import pytest

from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.mesh import training_mesh
from agentrm_jax.training.model import build_model
from agentrm_jax.training.step import TrainStep
from trainer_helpers import tiny_model

ROWS, LENGTH = 4, 16
# The largest constant a step may hold: the rope table and small index / iota tables are well below.
MAX_CONSTANT_BYTES = 4096
_ITEMSIZE = {"f32": 4, "f64": 8, "bf16": 2, "f16": 2, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "i1": 1, "ui32": 4,
             "ui8": 1}


def constant_sizes(hlo_text: str) -> list[tuple[int, str]]:
    """(bytes, type) of every constant of a StableHLO module, largest first."""
    sizes = []
    for match in re.finditer(r"(?:stablehlo|mhlo)\.constant\b[^\n]*?:\s*tensor<([^>]*)>", hlo_text):
        *dims, dtype = match.group(1).split("x")
        count = math.prod(int(d) for d in dims) if dims else 1
        sizes.append((count * _ITEMSIZE.get(dtype, 4), match.group(1)))
    return sorted(sizes, reverse=True)


def batch(step: TrainStep, labels=(1.0, 0.0, 1.0, 0.0)):
    rng = np.random.default_rng(0)
    agent = np.zeros((ROWS, LENGTH), bool)
    agent[:, LENGTH // 2:] = True
    host = {"input_ids": rng.integers(0, 49152, (ROWS, LENGTH)).astype(np.int32),
            "attention_mask": np.ones((ROWS, LENGTH), bool), "agent_mask": agent,
            "target_index": np.full((ROWS, 1), LENGTH - 1, np.int32), "targets": np.zeros((ROWS, 1), np.float32),
            "labels": np.asarray(labels, np.float32), "weights": np.ones((ROWS,), np.float32)}
    return step.put_batch(host)


def make_step(finetune: str, **overrides) -> TrainStep:
    config = TrainConfig(train="unused.jsonl", kind="implicit", finetune=finetune, steps=4, batch_size=ROWS,
                         lr=1e-3, warmup_steps=0, beta=1.0, lora_rank=2, **overrides)
    mesh = training_mesh(config.mesh, devices=jax.devices()[:1])
    model, trainable = build_model(config, backbone=tiny_model(), mesh=mesh)
    return TrainStep(model, trainable, config, mesh, total_steps=config.steps)


@pytest.fixture(scope="module")
def full():
    return make_step("full")


def test_the_full_finetuning_step_compiles_no_weight_into_itself(full):
    trainable = full.initial_trainable
    text = full.lower_step(trainable, full.init_opt_state(trainable), batch(full)).as_text()
    sizes = constant_sizes(text)
    assert sizes, "no constants found: the pattern no longer matches the HLO text"
    assert sizes[0][0] <= MAX_CONSTANT_BYTES, sizes[:5]
    # the reference's 49152 x 48 embedding is an argument of the program instead: beside the trained
    # embedding and its two AdamW moments, a fourth argument of that shape
    main = next(line for line in text.splitlines() if "func.func public @main(" in line)
    arguments = main.split(") -> (")[0]
    assert arguments.count("tensor<49152x48xf32>") == 4, arguments[:2000]


def test_the_reference_is_placed_like_the_trained_weights(full):
    from flax import nnx

    ref = {path: var.get_value() for path, var in nnx.to_flat_state(full.reference)}
    shardings = dict(nnx.to_flat_state(full.trainable_shardings))
    assert ref and set(ref) == set(shardings)
    for path, array in ref.items():
        sharding = shardings[path]
        assert array.sharding == getattr(sharding, "value", sharding), path


def test_the_reference_stays_at_the_initial_weights_while_the_policy_trains(full):
    trainable = full.initial_trainable
    initial = {p: np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(trainable)}
    opt_state = full.init_opt_state(trainable)
    losses = []
    for _ in range(3):
        trainable, opt_state, metrics = full.step(trainable, opt_state, batch(full))
        losses.append(float(metrics["loss"]))
    # the policy starts as the reference: every reward 0, BCE(sigmoid(0), y) = log 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert losses[-1] < losses[0] - 1e-4, losses  # and it moves away from it
    for path, array in jax.tree_util.tree_leaves_with_path(full.reference):
        np.testing.assert_array_equal(np.asarray(array), initial[path], err_msg=jax.tree_util.keystr(path))
    moved = [p for p, x in jax.tree_util.tree_leaves_with_path(trainable) if not np.array_equal(x, initial[p])]
    assert moved  # while the trained weights did change


def test_lora_needs_no_reference_weights_and_compiles_none_in():
    lora = make_step("lora")
    assert lora.reference is None  # pi_ref: the same weights with the adapters zeroed, inside the step
    trainable = lora.initial_trainable
    sizes = constant_sizes(lora.lower_step(trainable, lora.init_opt_state(trainable), batch(lora)).as_text())
    assert sizes[0][0] <= MAX_CONSTANT_BYTES, sizes[:5]
    _, _, metrics = lora.step(trainable, lora.init_opt_state(trainable), batch(lora))
    assert float(metrics["loss"]) == pytest.approx(math.log(2), abs=1e-6)
