"""Flax NNX decoder for the Llama family (Llama, Llama-3, Qwen2, SmolLM2).

Padding contract: `attention_mask` [B, T] marks real tokens (1) and padding (0);
left and right padding are both fine. Positions come from the mask's cumulative
sum, never from `arange`, so a left-padded row gets the same positions, and the
same logits at its real tokens, as the unpadded row. Masks are never derived from
`input_ids == pad_id` (SmolLM2's pad token is its EOS).

Numerics: parameters live in `param_dtype`, matmuls run in `dtype`; RMSNorm,
RoPE, attention scores and softmax run in float32 whatever `dtype` is.

Every parameter carries `logical_axes` metadata (e.g. ("embed", "mlp")); the
rules table in `sharding.py` maps those names to mesh axes. Nothing here names a
mesh axis.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.models.config import ModelConfig, rope_inverse_frequencies
from agentrm_jax.models.dense import dense, uses_cpu_layout
from agentrm_jax.models.lora import adapted_dense

# Finite, so a fully padded row gives a uniform softmax instead of NaN.
_MASK_VALUE = -1e30
# On CPU, attention with at most this many query rows per KV head (G * T: decode, and prefills of a few
# tokens) forms its scores with the keys as the dot's row operand (`_grouped_attention_block`).
KEY_ROWS_MAX_QUERIES = 32


def _param(rngs: nnx.Rngs | None, shape, axes, init, param_dtype) -> nnx.Param:
    """A parameter with its logical axis names; `rngs=None` skips random init (zeros)."""
    if rngs is None:
        value = jnp.zeros(shape, param_dtype)
    else:
        value = init(rngs.params(), shape, param_dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


_normal = jax.nn.initializers.normal(0.02)
_zeros = jax.nn.initializers.zeros
_ones = jax.nn.initializers.ones


@flax.struct.dataclass
class KVCache:
    """Per-layer keys and values of the tokens seen so far.

    Slots are shared by all rows: a call writes its T tokens at slots
    [index, index + T) of every row, so left-padded prompts keep working.
    With `shared`, every row's tokens come after the shared prefix's real tokens
    (positions continue from their count) and attend to all of them.
    """

    # [B, K, S, Dh]: slots next to head_dim, so attention reads the cache without transposing it.
    keys: tuple[jax.Array, ...]  # per layer [B, K, S, Dh]
    values: tuple[jax.Array, ...]  # per layer [B, K, S, Dh]
    mask: jax.Array  # [B, S] bool: slot holds a real token
    index: jax.Array  # [] int32: next slot to write
    # A prefix every row attends to before its own slots, stored once (batch 1, never written by
    # this cache's calls): the common prefix of a sampler call's prompts. None: rows share nothing.
    shared: "KVCache | None" = None

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> "KVCache":
        shape = (batch, config.num_kv_heads, length, config.head_dim)
        # Distinct buffers for keys and values: a shared one could not be donated.
        zeros = lambda: tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
        return cls(keys=zeros(), values=zeros(), mask=jnp.zeros((batch, length), bool),
                   index=jnp.zeros((), jnp.int32))

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def pad_to(self, length: int) -> "KVCache":
        """The same cache with `length` slots (extra slots empty); `length` is static."""
        extra = length - self.length
        if extra < 0:
            raise ValueError(f"cannot shrink a KV cache from {self.length} to {length} slots")
        pad4 = ((0, 0), (0, 0), (0, extra), (0, 0))
        return self.replace(
            keys=tuple(jnp.pad(k, pad4) for k in self.keys),
            values=tuple(jnp.pad(v, pad4) for v in self.values),
            mask=jnp.pad(self.mask, ((0, 0), (0, extra))),
        )

    def repeat(self, n: int) -> "KVCache":
        """Each row repeated n times ([B, ...] -> [B * n, ...], row-major): n samples share a prefill."""
        rep = functools.partial(jnp.repeat, repeats=n, axis=0)
        return self.replace(keys=tuple(map(rep, self.keys)), values=tuple(map(rep, self.values)),
                            mask=rep(self.mask))


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Token positions [B, T] int32: index among the row's real tokens (0 at padding)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, Dh // 2] in float32 for integer positions [B, T]."""
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates x [B, T, H, Dh] (HF half-split layout) by cos/sin [B, T, Dh/2]; f32 math."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    x1, x2 = x32[..., :half], x32[..., half:]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis, statistics in float32, output in x's dtype."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


# A long prefill's float32 scores are B * H * T * S * 4 bytes: 8 rows of an 8k-token agent context
# asked XLA:CPU for 33 GB in one allocation (a 30-turn SciWorld eval). On CPU, above this size the
# queries are processed in blocks (`query_block_rows`), each attending to every key: the same numbers,
# bounded memory. Accelerators keep the all-at-once form (their shapes are global under a mesh, and
# many small blocks would only slow their matmuls).
MAX_SCORE_BYTES = 512 * 2**20


def query_block_rows(batch: int, heads: int, queries: int, keys: int, max_score_bytes: int | None = None) -> int:
    """Query positions per attention block so that one block's float32 scores [B, H, block, keys]
    fit in `max_score_bytes` (default `MAX_SCORE_BYTES`): `queries` itself when they all fit, else
    the fewest equal blocks that do, rounded up to a multiple of 8 (at least 16 rows; the rounding
    may pass the budget by up to 7 rows' scores)."""
    budget = MAX_SCORE_BYTES if max_score_bytes is None else max_score_bytes
    per_query = batch * heads * keys * 4
    if queries * per_query <= budget:
        return queries
    blocks = -(-queries * per_query // budget)
    rows = -(-queries // blocks)  # ceil
    return max(16, -(-rows // 8) * 8)


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array,
                      shared: tuple[jax.Array, jax.Array, jax.Array] | None = None, *,
                      max_score_bytes: int | None = None) -> jax.Array:
    """Grouped-query attention without materialising repeated KV heads, in query blocks when the
    scores would exceed `max_score_bytes` (default: `MAX_SCORE_BYTES` on CPU, read at trace time, and
    no blocks on accelerators; see `query_block_rows`: a static choice per shape). On CPU, a batch of
    rows with at most `KEY_ROWS_MAX_QUERIES` query rows per KV head (decode) forms its scores keys-first
    (`_scores`).

    q [B, T, H, Dh]; k, v [B, K, S, Dh] with H = K * G; allowed [B, T, S] bool; shared as in
    `_grouped_attention_block`. Returns [B, T, H, Dh] in q's dtype; scores and softmax in float32.
    """
    b, t, h, dh = q.shape
    keys = k.shape[2] + (0 if shared is None else shared[0].shape[1])
    cpu = uses_cpu_layout(q)  # the same CPU test as dense's layout
    if max_score_bytes is None and not cpu:
        return _grouped_attention_block(q, k, v, allowed, shared)
    block = query_block_rows(b, h, t, keys, max_score_bytes)
    if block >= t:
        key_rows = cpu and b > 1 and (h // k.shape[1]) * t <= KEY_ROWS_MAX_QUERIES
        return _grouped_attention_block(q, k, v, allowed, shared, key_rows=key_rows)
    pad = -t % block  # padded queries see no row slot (finite scores, no NaN) and are cut off
    blocks = (t + pad) // block
    q_blocks = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, blocks, block, h, dh).swapaxes(0, 1)
    allowed_blocks = jnp.pad(allowed, ((0, 0), (0, pad), (0, 0))).reshape(b, blocks, block, -1).swapaxes(0, 1)
    # checkpointed, so a backward pass recomputes one block's scores at a time instead of keeping
    # every block's (the scan would otherwise stack them: the whole score size again)
    block_attention = jax.checkpoint(lambda q_block, allowed_block: _grouped_attention_block(
        q_block, k, v, allowed_block, shared))
    out = jax.lax.map(lambda xs: block_attention(*xs), (q_blocks, allowed_blocks))
    return out.swapaxes(0, 1).reshape(b, blocks * block, h, dh)[:, :t]


def _scores(q: jax.Array, k: jax.Array, key_rows: bool) -> jax.Array:
    """float32 q . k over head_dim: q [B, K, Q, Dh]; k [B, K, S, Dh], or [K, S, Dh] for a shared prefix
    -> [B, K, Q, S].

    key_rows: compute k @ q^T ([S, Q] per head) and transpose that small result. With few query rows
    (decode: Q = G), XLA:CPU's dot is faster with the long keys as its row operand than as its
    transposed column operand (the dot alone: 1.8 vs 5.2 ms for 8 rows x 3 KV heads x 4,096 keys);
    the barrier keeps XLA from folding the transpose back into the dot. The products are the same.
    """
    keys = "bksd" if k.ndim == 4 else "ksd"
    if not key_rows:
        return jnp.einsum(f"bkqd,{keys}->bkqs", q, k, preferred_element_type=jnp.float32)
    scores = jnp.einsum(f"{keys},bkqd->bksq", k, q, preferred_element_type=jnp.float32)
    return jax.lax.optimization_barrier(scores).swapaxes(2, 3)


def _grouped_attention_block(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array,
                             shared: tuple[jax.Array, jax.Array, jax.Array] | None = None,
                             key_rows: bool = False) -> jax.Array:
    """Grouped-query attention of all queries at once, without materialising repeated KV heads.

    q [B, T, H, Dh]; k, v [B, K, S, Dh] with H = K * G; allowed [B, T, S] bool.
    shared: None or (keys, values [K, P, Dh], allowed [P] bool), a prefix that every query
    attends to, stored once for the batch: its scores are one matmul over all B * G * T queries,
    so its keys and values are read once per call instead of once per row (decode reads the
    whole cache every step). The softmax runs over the shared and the row slots together.
    key_rows: form the scores keys-first (`_scores`; the same numbers, faster for decode on CPU).
    Returns [B, T, H, Dh] in q's dtype; scores and softmax in float32.
    """
    b, t, h, dh = q.shape
    kv_heads, s = k.shape[1], k.shape[2]
    groups = h // kv_heads
    # Queries of one KV head as one [G*T, Dh] matrix, so both products are plain batched matmuls
    # over (B, K). The 5-D einsums this replaces made XLA:CPU insert transposes in the backward
    # pass: 2.5x slower attention gradients at 4 x 256 tokens, the same forward numbers.
    q = q.reshape(b, t, kv_heads, groups, dh).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, groups * t, dh)
    scores = _scores(q, k, key_rows).reshape(b, kv_heads, groups, t, s) * (dh ** -0.5)
    scores = jnp.where(allowed[:, None, None, :, :], scores, _MASK_VALUE)
    if shared is not None:
        shared_k, shared_v, shared_allowed = shared
        p = shared_k.shape[1]
        prefix = _scores(q, shared_k.astype(q.dtype), key_rows)
        prefix = jnp.where(shared_allowed, prefix.reshape(b, kv_heads, groups, t, p) * (dh ** -0.5), _MASK_VALUE)
        scores = jnp.concatenate([prefix, scores], axis=-1)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs[..., -s:].reshape(b, kv_heads, groups * t, s), v)
    if shared is not None:
        out = out + jnp.einsum("bkqs,ksd->bkqd", probs[..., :p].reshape(b, kv_heads, groups * t, p),
                               shared_v.astype(v.dtype))
    out = out.reshape(b, kv_heads, groups, t, dh)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, dh)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """`grouped_attention`'s contract through `jax.nn.dot_product_attention`.

    q [B, T, H, Dh]; k, v [B, K, S, Dh]; allowed [B, T, S] bool -> [B, T, H, Dh]. On GPU with
    16-bit inputs it asks for cuDNN's fused kernel (falling back to XLA's form when cuDNN refuses
    the shapes); elsewhere it is XLA's reference form (f32 scores, a finite mask value, so a
    fully padded row stays finite).
    """
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, S, K, Dh]
    mask = allowed[:, None, :, :]  # [B, 1, T, S], broadcast over heads
    if jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
        except (ValueError, NotImplementedError, RuntimeError):
            pass  # unsupported head size / cuDNN version: the XLA form below
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


ATTENTION = {"grouped": grouped_attention, "dot_product": dot_product_attention}


def attend(impl: str, q, k, v, allowed, shared=None):
    """`ATTENTION[impl]` with an optional shared prefix (see `grouped_attention`). A kernel without
    shared-prefix support gets the prefix broadcast to every row in front of the row's slots."""
    if shared is None:
        return ATTENTION[impl](q, k, v, allowed)
    if impl == "grouped":
        return ATTENTION[impl](q, k, v, allowed, shared)
    shared_k, shared_v, shared_allowed = shared
    b, t = q.shape[:2]
    wide = lambda x, own: jnp.concatenate([jnp.broadcast_to(x.astype(own.dtype), (b, *x.shape)), own], axis=2)
    allowed = jnp.concatenate([jnp.broadcast_to(shared_allowed, (b, t, shared_allowed.shape[0])), allowed], -1)
    return ATTENTION[impl](q, wide(shared_k, k), wide(shared_v, v), allowed)


class RMSNorm(nnx.Module):
    def __init__(self, size: int, eps: float, *, param_dtype, rngs: nnx.Rngs | None):
        self.weight = nnx.Param(jnp.ones((size,), param_dtype), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x):
        return rms_norm(x, self.weight[...], self.eps)


class Attention(nnx.Module):
    """Projections of one attention block; the math is `grouped_attention`."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        d, h, k, dh = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        p = functools.partial(_param, rngs, param_dtype=param_dtype)
        # [out, in] like transformers: see `dense` for why.
        self.q_proj = p((h, dh, d), ("heads", "head_dim", "embed"), _normal)
        self.k_proj = p((k, dh, d), ("kv_heads", "head_dim", "embed"), _normal)
        self.v_proj = p((k, dh, d), ("kv_heads", "head_dim", "embed"), _normal)
        self.o_proj = p((d, h, dh), ("embed", "heads", "head_dim"), _normal)
        if config.qkv_bias:
            self.q_bias = p((h, dh), ("heads", "head_dim"), _zeros)
            self.k_bias = p((k, dh), ("kv_heads", "head_dim"), _zeros)
            self.v_bias = p((k, dh), ("kv_heads", "head_dim"), _zeros)
        if config.o_bias:
            self.o_bias = p((d,), ("embed",), _zeros)
        self.config = config
        self.dtype = dtype

    def project_qkv(self, x):
        """x [B, T, D] -> q [B, T, H, Dh], k, v [B, T, K, Dh] (before RoPE)."""
        cast = lambda w: w[...].astype(self.dtype)
        q = adapted_dense(self, "q_proj", x, cast(self.q_proj), out_dims=2)
        k = adapted_dense(self, "k_proj", x, cast(self.k_proj), out_dims=2)
        v = adapted_dense(self, "v_proj", x, cast(self.v_proj), out_dims=2)
        if self.config.qkv_bias:
            q, k, v = q + cast(self.q_bias), k + cast(self.k_bias), v + cast(self.v_bias)
        return q, k, v

    def project_out(self, attn):
        """attn [B, T, H, Dh] -> [B, T, D]."""
        b, t = attn.shape[:2]
        out = adapted_dense(self, "o_proj", attn.reshape(b, t, -1),
                            self.o_proj[...].astype(self.dtype).reshape(self.config.hidden_size, -1))
        if self.config.o_bias:
            out = out + self.o_bias[...].astype(self.dtype)
        return out


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        d, f = config.hidden_size, config.intermediate_size
        p = functools.partial(_param, rngs, param_dtype=param_dtype)
        self.gate_proj = p((f, d), ("mlp", "embed"), _normal)  # [out, in]
        self.up_proj = p((f, d), ("mlp", "embed"), _normal)
        self.down_proj = p((d, f), ("embed", "mlp"), _normal)
        if config.mlp_bias:
            self.gate_bias = p((f,), ("mlp",), _zeros)
            self.up_bias = p((f,), ("mlp",), _zeros)
            self.down_bias = p((d,), ("embed",), _zeros)
        self.mlp_bias = config.mlp_bias
        self.dtype = dtype

    def __call__(self, x):
        cast = lambda w: w[...].astype(self.dtype)
        gate = adapted_dense(self, "gate_proj", x, cast(self.gate_proj))
        up = adapted_dense(self, "up_proj", x, cast(self.up_proj))
        if self.mlp_bias:
            gate, up = gate + cast(self.gate_bias), up + cast(self.up_bias)
        out = adapted_dense(self, "down_proj", jax.nn.silu(gate) * up, cast(self.down_proj))
        if self.mlp_bias:
            out = out + cast(self.down_bias)
        return out


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs | None):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.attn = Attention(config, **kw)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype,
                                      rngs=rngs)
        self.mlp = MLP(config, **kw)

    def __call__(self, x, cos, sin, allowed, cache_kv, cache_index, attention_impl: str = "grouped", shared=None):
        """x [B, T, D]; cache_kv None or (k, v) [B, K, S, Dh]; shared None or this layer's shared prefix
        (keys, values [K, P, Dh], allowed [P]). Returns (x, (k, v)), k/v [B, K, S, Dh]."""
        q, k, v = self.attn.project_qkv(self.input_norm(x))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, T, Dh]
        if cache_kv is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k.astype(cache_kv[0].dtype), cache_index, 2)
            v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v.astype(cache_kv[1].dtype), cache_index, 2)
        attn = attend(attention_impl, q, k.astype(q.dtype), v.astype(q.dtype), allowed, shared)
        x = x + self.attn.project_out(attn)
        x = x + self.mlp(self.post_attn_norm(x))
        return x, (k, v)


def run_layers(layers, config: ModelConfig, x, cos, sin, allowed, cache_kv, index, shared_kv=None):
    """The decoder stack. x [B, T, D]; cache_kv None or (keys, values), per-layer tuples of
    [B, K, S, Dh]; shared_kv None or (keys, values, allowed): per-layer tuples of a shared prefix's
    [K, P, Dh] and its [P] bool mask (see `grouped_attention`). Returns (x, keys, values) with the
    per-layer (updated) keys and values.

    `config.remat` wraps every layer in `jax.checkpoint` (policy "full": keep only the layer's
    input; "dots_saveable": keep matmul outputs). `config.scan_layers` runs one `lax.scan` over
    the layers, their parameters stacked to [L, ...] here, at trace time. Why stack at forward
    time rather than store the layers stacked: the per-layer modules (`layers.{i}.attn.q_proj`)
    stay what the HF/GGUF tables, LoRA, checkpoints and export address, unchanged; the price is
    one transient stacked copy of the layer weights (and of their gradients) inside the jitted
    step, sharded like the weights. Both options give the unrolled forward's numbers.
    """
    impl = config.attention_impl
    with_cache = cache_kv is not None
    per_layer_kv = [(cache_kv[0][i], cache_kv[1][i]) if with_cache else None for i in range(len(layers))]
    shared_allowed = None if shared_kv is None else shared_kv[2]
    per_layer_shared = [None if shared_kv is None else (shared_kv[0][i], shared_kv[1][i])
                        for i in range(len(layers))]
    with_allowed = lambda skv: None if skv is None else (*skv, shared_allowed)
    if config.remat == "none" and not config.scan_layers:
        outs = []
        for layer, kv, skv in zip(layers, per_layer_kv, per_layer_shared):
            x, kv_out = layer(x, cos, sin, allowed, kv, index, attention_impl=impl, shared=with_allowed(skv))
            outs.append(kv_out)
        return x, tuple(k for k, _ in outs), tuple(v for _, v in outs)

    splits = [nnx.split(layer) for layer in layers]
    graphdef = splits[0][0]
    if config.scan_layers and any(g != graphdef for g, _ in splits):
        raise ValueError("scan_layers=True needs every decoder layer to have the same structure (e.g. LoRA on all "
                         "layers or none); set scan_layers=False for this model")

    def layer_step(graphdef):
        def run(state, x, kv, skv):  # pure in (state, x, kv, skv): what jax.checkpoint and lax.scan need
            return nnx.merge(graphdef, state)(x, cos, sin, allowed, kv, index, attention_impl=impl,
                                              shared=with_allowed(skv))
        if config.remat == "none":
            return run
        policy = None if config.remat == "full" else jax.checkpoint_policies.dots_saveable
        return jax.checkpoint(run, policy=policy)

    if not config.scan_layers:
        outs = []
        for (layer_def, state), kv, skv in zip(splits, per_layer_kv, per_layer_shared):
            x, kv_out = layer_step(layer_def)(state, x, kv, skv)
            outs.append(kv_out)
        return x, tuple(k for k, _ in outs), tuple(v for _, v in outs)

    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(state for _, state in splits))  # [L, ...]
    body_fn = layer_step(graphdef)

    def body(x, xs):
        state, kv, skv = xs
        x, kv_out = body_fn(state, x, kv, skv)
        return x, (kv_out if with_cache else None)

    stacked_kv = (jnp.stack(cache_kv[0]), jnp.stack(cache_kv[1])) if with_cache else None  # [L, B, K, S, Dh]
    stacked_shared = None if shared_kv is None else (jnp.stack(shared_kv[0]), jnp.stack(shared_kv[1]))
    x, kv_out = jax.lax.scan(body, x, (stacked, stacked_kv, stacked_shared))
    if not with_cache:
        return x, (), ()
    return x, tuple(kv_out[0]), tuple(kv_out[1])


class LlamaForCausalLM(nnx.Module):
    """Decoder-only LM. `model(ids, mask)` -> logits [B, T, V] (float32).

    With `cache=`, returns `(logits, new_cache)` and reads/writes the KV cache:
    the T new tokens go to slots [cache.index, cache.index + T), and `attention_mask`
    [B, T] marks which of them are real.
    """

    def __init__(self, config: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        self.config = config
        self.dtype = jnp.dtype(dtype)
        kw = dict(dtype=self.dtype, param_dtype=param_dtype, rngs=rngs)
        self.embed = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), _normal,
                            param_dtype)
        self.layers = nnx.List([DecoderLayer(config, **kw) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        if not config.tie_word_embeddings:
            self.lm_head = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), _normal,
                                  param_dtype)

    def __call__(self, input_ids, attention_mask, cache: KVCache | None = None):
        hidden, new_cache = self.backbone(input_ids, attention_mask, cache)
        logits = self.logits(hidden)
        return logits if cache is None else (logits, new_cache)

    def logits(self, hidden):
        """hidden [..., D] (final-normed) -> logits [..., V] in float32."""
        w = self.embed if self.config.tie_word_embeddings else self.lm_head  # both [V, D]
        return dense(hidden, w[...].astype(self.dtype), out_dtype=jnp.float32).astype(jnp.float32)

    def backbone(self, input_ids, attention_mask, cache: KVCache | None = None):
        """Final-normed hidden states [B, T, D] and the updated cache (None without one)."""
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be [batch, time], got "
                             f"{input_ids.shape} and {attention_mask.shape}")
        t = input_ids.shape[1]
        mask = attention_mask.astype(bool)
        if cache is None:
            positions = positions_from_mask(mask)
            query_slots = jnp.arange(t)
            key_mask, key_slots, index = mask, jnp.arange(t), 0
        else:
            index = cache.index
            key_mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, mask, index, 1)
            positions = jax.lax.dynamic_slice_in_dim(positions_from_mask(key_mask), index, t, 1)
            if cache.shared is not None:  # the rows' tokens come after the shared prefix's
                positions = positions + jnp.sum(cache.shared.mask[0].astype(jnp.int32))
            query_slots = index + jnp.arange(t)
            key_slots = jnp.arange(cache.length)
        allowed = key_mask[:, None, :] & (key_slots[None, None, :] <= query_slots[None, :, None])  # [B,T,S]
        inv_freq = np.asarray(rope_inverse_frequencies(self.config), np.float32)  # constant
        cos, sin = rope_tables(positions, inv_freq)

        x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
        cache_kv = None if cache is None else (cache.keys, cache.values)
        shared = None if cache is None else cache.shared
        shared_kv = None if shared is None else (tuple(k[0] for k in shared.keys), tuple(v[0] for v in shared.values),
                                                 shared.mask[0])
        x, new_keys, new_values = run_layers(self.layers, self.config, x, cos, sin, allowed, cache_kv, index,
                                             shared_kv)
        hidden = self.norm(x)
        if cache is None:
            return hidden, None
        return hidden, cache.replace(keys=tuple(new_keys), values=tuple(new_values), mask=key_mask,
                                     index=index + t)


def init_model(config: ModelConfig, *, seed: int = 0, dtype=jnp.float32, param_dtype=jnp.float32
               ) -> LlamaForCausalLM:
    """A randomly initialised model (normal(0.02) weights, unit norms, zero biases)."""
    return LlamaForCausalLM(config, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(params=seed))
