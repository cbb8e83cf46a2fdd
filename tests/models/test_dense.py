"""`dense`: the XLA:CPU small-row layout (W @ x^T behind a barrier) is taken on CPU only."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agentrm_jax.models.dense import SMALL_ROWS, dense, uses_cpu_layout


def _inputs(rows: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((rows, 37)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 5, 37)), jnp.float32)
    return x, w


def _lowered(fn, *args) -> str:
    """The StableHLO text jit lowers fn to (a fresh jit each time, so each call traces afresh)."""
    return jax.jit(fn).lower(*args).as_text()


def _reference(x, w):
    return np.einsum("ni,oi->no", np.asarray(x), np.asarray(w).reshape(15, 37)).reshape(len(x), 3, 5)


def test_cpu_small_rows_lower_to_the_barrier_and_large_ones_to_the_plain_dot():
    assert jax.default_backend() == "cpu"
    x, w = _inputs(8)
    assert uses_cpu_layout(x)
    hlo = _lowered(lambda a, b: dense(a, b, out_dims=2), x, w)
    assert "stablehlo.optimization_barrier" in hlo
    assert "tensor<15x8xf32>" in hlo  # the dot's output is [O, N]: W @ x^T
    big, _ = _inputs(SMALL_ROWS + 1)
    hlo = _lowered(lambda a, b: dense(a, b, out_dims=2), big, w)
    assert "optimization_barrier" not in hlo and "stablehlo.dot_general" in hlo


def test_the_plain_dot_when_forced_by_the_parameter_gives_the_same_numbers():
    x, w = _inputs(8)
    cpu = jax.jit(lambda a, b: dense(a, b, out_dims=2))(x, w)
    hlo = _lowered(lambda a, b: dense(a, b, out_dims=2, cpu_layout=False), x, w)
    assert "optimization_barrier" not in hlo and "tensor<8x15xf32>" in hlo  # [N, O]: x @ W^T
    plain = jax.jit(lambda a, b: dense(a, b, out_dims=2, cpu_layout=False))(x, w)
    assert plain.shape == cpu.shape == (8, 3, 5)
    # the same sums in another layout: equal up to the GEMM kernels' summation order, which depends on the
    # CPU (bit-equal on the hosts until 2026-12-03, ~2e-6 apart on the AMD EPYC host of 2026-12-04)
    np.testing.assert_allclose(np.asarray(plain), np.asarray(cpu), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(plain), _reference(x, w), rtol=1e-5, atol=1e-5)
    # and the CPU path forced on wherever it runs
    assert "optimization_barrier" in _lowered(lambda a, b: dense(a, b, out_dims=2, cpu_layout=True), x, w)


def test_an_accelerator_default_backend_traces_the_plain_dot(monkeypatch):
    """Under jit the arrays are tracers, so the choice follows jax.default_backend(): with it answering
    "gpu" (what a GPU process reports), tracing gives the plain dot, which still runs here with equal numbers."""
    x, w = _inputs(8)
    cpu = np.asarray(jax.jit(lambda a, b: dense(a, b, out_dims=2))(x, w))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    fn = jax.jit(lambda a, b: dense(a, b, out_dims=2))
    hlo = fn.lower(x, w).as_text()
    assert "optimization_barrier" not in hlo and "stablehlo.dot_general" in hlo
    np.testing.assert_allclose(np.asarray(fn(x, w)), cpu, rtol=1e-6, atol=1e-5)  # summation order aside
    monkeypatch.undo()
    assert "optimization_barrier" in _lowered(lambda a, b: dense(a, b, out_dims=2), x, w)


def test_concrete_arrays_decide_by_their_devices(monkeypatch):
    x, w = _inputs(8)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert uses_cpu_layout(x)  # eager: the array's own (CPU) device, not the default backend
    np.testing.assert_allclose(np.asarray(dense(x, w, out_dims=2)), _reference(x, w), rtol=1e-5, atol=1e-5)


def test_numpy_inputs_take_the_default_backends_path():
    """A numpy array has no sharding: dense decides by jax's default backend, as under jit."""
    x, w = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    assert uses_cpu_layout(x) == (jax.default_backend() == "cpu")
    assert np.allclose(np.asarray(dense(x, w)), 4.0)
