"""The projection primitive every layer uses: x times a weight stored in transformers' [out, in] layout."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import jax
import jax.numpy as jnp

__all__ = ["SMALL_ROWS", "dense", "dense_backend", "uses_cpu_layout"]

# At most this many rows, `dense` computes W @ x^T instead of x @ W^T (decode-sized batches), on CPU.
SMALL_ROWS = 64

_BACKENDS = ("cpu", "accelerator")
_forced_backend: str | None = None  # set only by `dense_backend`, for tests and benchmarks


@contextlib.contextmanager
def dense_backend(backend: str | None) -> Iterator[None]:
    """Traces `dense` as if for `backend` ("cpu" | "accelerator"; None: detect) inside the block.

    The choice is made at trace time, so a function jitted before the block keeps its layout:
    trace (or jit) afresh inside the block.
    """
    global _forced_backend
    if backend not in (None, *_BACKENDS):
        raise ValueError(f"dense_backend({backend!r}): expected one of {_BACKENDS} or None")
    before, _forced_backend = _forced_backend, backend
    try:
        yield
    finally:
        _forced_backend = before


def uses_cpu_layout(x: jax.Array) -> bool:
    """Whether `dense` takes the XLA:CPU small-row path for x: forced by `dense_backend`, else the
    platform of x's devices when x is a concrete array, else jax's default backend (under jit)."""
    if _forced_backend is not None:
        return _forced_backend == "cpu"
    try:
        return all(d.platform == "cpu" for d in x.sharding.device_set)  # concrete array
    except Exception:  # a tracer has no devices: jit compiles for the default backend
        return jax.default_backend() == "cpu"


def dense(x: jax.Array, w: jax.Array, *, out_dims: int = 1, out_dtype=None) -> jax.Array:
    """x [..., I] times w [*O, I] (transformers' [out, in] layout) -> [..., *O].

    On XLA:CPU, for few rows (decode) the product is formed as w @ x^T, whose [O, N]
    output layout makes XLA:CPU stream the weight matrix once at near memory bandwidth;
    x @ w^T with N <= 64 rows runs about 2x slower there. The barrier stops XLA from
    folding the final transpose back into the dot (which restores the slow form). Large N
    (prefill, training) and every accelerator use the ordinary product: a GPU/TPU compiler
    picks its own layouts, and the barrier would only block fusion there.
    """
    lead, width = x.shape[:-1], x.shape[-1]
    out_shape = w.shape[:out_dims]
    w2 = w.reshape(-1, width)  # [O, I]
    rows = math.prod(lead)
    x2 = x.reshape(rows, width)
    if rows <= SMALL_ROWS and uses_cpu_layout(x):
        yt = jnp.einsum("oi,ni->on", w2, x2, preferred_element_type=out_dtype)  # [O, N]
        y = jax.lax.optimization_barrier(yt).T
    else:
        y = jnp.einsum("ni,oi->no", x2, w2, preferred_element_type=out_dtype)
    return y.reshape(*lead, *out_shape)
