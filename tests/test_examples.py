"""The programs in examples/ run on tiny random models and do what their docstrings say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_short_and_has_a_main():
    files = sorted(EXAMPLES.glob("*.py"))
    assert [f.stem for f in files] == ["implicit_step_rewards", "reinforce_with_explicit_rm"]
    for f in files:
        text = f.read_text()
        assert len(text.splitlines()) <= 80 and "def main(" in text and '__name__ == "__main__"' in text, f


def test_reinforce_with_the_explicit_rm_updates_the_policy():
    from flax import nnx

    from agentrm_jax.models import ModelConfig, init_model

    policy = init_model(ModelConfig.tiny(), seed=0)
    before = nnx.split(policy)[1]
    result = _load("reinforce_with_explicit_rm").main(steps=2, batch=4, policy=policy)
    assert len(result["reward"]) == len(result["loss"]) == 2
    assert np.isfinite(result["reward"]).all() and np.isfinite(result["loss"]).all()
    moved = [float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(result["params"]))]
    assert all(np.isfinite(moved)) and max(moved) > 0  # the RM's rewards drove an update


def test_implicit_step_rewards_from_token_arrays():
    example = _load("implicit_step_rewards")
    scores, steps = example.main(batch=3, steps=3, how="sum")
    assert scores.shape == (3,) and steps.shape == (3, 3)
    np.testing.assert_allclose(scores, steps.sum(-1), rtol=1e-5, atol=1e-6)  # steps cover every agent token
    assert np.abs(steps).max() > 1e-4
    # the padding contract: right-padded copies of the same rows give the same step rewards
    _, right = example.main(batch=3, steps=3, how="sum", left_pad=False)
    np.testing.assert_allclose(right, steps, atol=2e-5)
    mins, _ = example.main(batch=3, steps=3, how="min")
    np.testing.assert_allclose(mins, steps.min(-1), atol=1e-6)
