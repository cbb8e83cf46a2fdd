"""The projection primitive every layer uses: x times a weight stored in transformers' [out, in] layout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["SMALL_ROWS", "dense", "uses_cpu_layout"]

# At most this many rows, `dense` computes W @ x^T instead of x @ W^T (decode-sized batches), on CPU.
SMALL_ROWS = 64


def uses_cpu_layout(x: jax.Array) -> bool:
    """Whether `dense` takes the XLA:CPU small-row path for x: the platform of x's devices when x is a
    concrete array, else (a tracer, under jit) jax's default backend, which jit compiles for."""
    # Tested before touching x.sharding: on a tracer that attribute raises only after jax builds an error
    # message by walking the whole jaxpr so far, which made tracing a 30-layer model 3x slower.
    if isinstance(x, jax.core.Tracer) or not hasattr(x, "sharding"):  # a tracer, or a numpy array
        return jax.default_backend() == "cpu"
    return all(d.platform == "cpu" for d in x.sharding.device_set)


def dense(x: jax.Array, w: jax.Array, *, out_dims: int = 1, out_dtype=None,
          cpu_layout: bool | None = None) -> jax.Array:
    """x [..., I] times w [*O, I] (transformers' [out, in] layout) -> [..., *O].

    On XLA:CPU, for few rows (decode) the product is formed as w @ x^T, whose [O, N]
    output layout makes XLA:CPU stream the weight matrix once at near memory bandwidth;
    x @ w^T with N <= 64 rows runs about 2x slower there. The barrier stops XLA from
    folding the final transpose back into the dot (which restores the slow form). Large N
    (prefill, training) and every accelerator use the ordinary product: a GPU/TPU compiler
    picks its own layouts, and the barrier would only block fusion there.

    cpu_layout: take the CPU path (True) or the plain dot (False) whatever the backend;
    None (default) decides at trace time by `uses_cpu_layout(x)`.
    """
    lead, width = x.shape[:-1], x.shape[-1]
    out_shape = w.shape[:out_dims]
    w2 = w.reshape(-1, width)  # [O, I]
    rows = math.prod(lead)
    x2 = x.reshape(rows, width)
    on_cpu = uses_cpu_layout(x) if cpu_layout is None else cpu_layout
    if rows <= SMALL_ROWS and on_cpu:
        yt = jnp.einsum("oi,ni->on", w2, x2, preferred_element_type=out_dtype)  # [O, N]
        y = jax.lax.optimization_barrier(yt).T
    else:
        y = jnp.einsum("ni,oi->no", x2, w2, preferred_element_type=out_dtype)
    return y.reshape(*lead, *out_shape)
