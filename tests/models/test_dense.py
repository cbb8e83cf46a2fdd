"""`dense`: the XLA:CPU small-row layout (W @ x^T behind a barrier) is taken on CPU only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentrm_jax.models.dense import SMALL_ROWS, dense, dense_backend, uses_cpu_layout


def _inputs(rows: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((rows, 37)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 5, 37)), jnp.float32)
    return x, w


def _primitives(fn, *args) -> set[str]:
    return {eqn.primitive.name for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_cpu_small_rows_take_the_barrier_path():
    assert jax.default_backend() == "cpu"
    x, w = _inputs(8)
    assert uses_cpu_layout(x)
    assert "optimization_barrier" in _primitives(lambda a, b: dense(a, b, out_dims=2), x, w)
    big, _ = _inputs(SMALL_ROWS + 1)
    assert "optimization_barrier" not in _primitives(lambda a, b: dense(a, b, out_dims=2), big, w)


def test_accelerator_mode_is_the_plain_dot_with_the_same_numbers():
    x, w = _inputs(8)
    cpu = jax.jit(lambda a, b: dense(a, b, out_dims=2))(x, w)
    with dense_backend("accelerator"):
        assert not uses_cpu_layout(x)
        prims = _primitives(lambda a, b: dense(a, b, out_dims=2), x, w)
        plain = jax.jit(lambda a, b: dense(a, b, out_dims=2))(x, w)  # a fresh jit traces inside the block
    assert "optimization_barrier" not in prims and "dot_general" in prims
    assert plain.shape == cpu.shape == (8, 3, 5)
    np.testing.assert_array_equal(np.asarray(plain), np.asarray(cpu))  # same sums, another layout
    np.testing.assert_allclose(np.asarray(plain), np.einsum("ni,oi->no", np.asarray(x), np.asarray(w).reshape(15, 37)
                                                             ).reshape(8, 3, 5), rtol=1e-5, atol=1e-5)


def test_dense_backend_rejects_unknown_names_and_restores():
    with pytest.raises(ValueError, match="gpu"):
        with dense_backend("gpu"):
            pass
    with dense_backend("accelerator"):
        with dense_backend("cpu"):
            assert uses_cpu_layout(jnp.ones(2))
        assert not uses_cpu_layout(jnp.ones(2))
    assert uses_cpu_layout(jnp.ones(2))
