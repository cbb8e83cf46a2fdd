"""KV-cache sampler: one jitted prefill per prompt batch, one jitted `while_loop` decode.

Shapes are bucketed so a run over many prompts compiles a bounded number of
programs: prompts are left-padded to a bucketed length (powers of two >= 16,
quarter-octave steps above 256 tokens: see models/buckets.py), the prompt
batch is padded to a power of two, and the output buffer to a power of two of
`max_new_tokens`. The n samples of a prompt share its prefill: the prompt's KV
cache is computed once and repeated n times inside the prefill program.

Stop strings are matched on decoded text between decode chunks (a chunk is a
`while_loop` that runs until every row hit EOS or the chunk's step budget), so a
string that tokenizes differently in context is still caught. A completion
ends at the first token whose decoded prefix holds a stop string (the tokens a
chunk decoded past it are dropped), and its text is cut before that string:
the result is the same as checking after every token.

Randomness is per prompt, not per batch row: sample j of a prompt draws from
`fold_in(fold_in(key(seed), hash(prompt ids)), j)`, folded with the step
number, so its samples depend only on (seed, prompt, j), never on the other
prompts of the call, the prompt's position, `max_batch` or the padded shapes.
A prompt that occurs again in the same call continues the sample count (its
second occurrence draws samples n..2n-1), so repeated prompts still get
distinct samples: `[p, p]` with n=1 gives what `[p]` with n=2 gives.

Prefix cache (`prefix_cache=True`, see prefix_cache.py): the KV of earlier
prompts and completions is kept in token blocks, and a prompt only prefills
its uncached suffix. Row r of such a prefill is laid out as
`[pad | cached prefix (p_r) | pad | suffix (s_r) | generated]`: the prefix
region (Pp slots, bucketed) is right-aligned, the suffix region (Ts slots,
bucketed) left-padded, so every row writes its suffix at the same slots
[Pp, Pp + Ts) with one scalar cache index. The masked slots in the middle
change neither positions (the cumulative sum of the mask) nor attention, so
the result equals a prefill of the whole prompt (to float rounding).

Shared prefix: the rows of one call often start with the same tokens (the
system prompt and worked example of lockstep episodes, the prompt of n
samples, a beam's parent). That common prefix is prefilled once at batch 1
(on top of its cached blocks) and held once as the cache's `shared` part,
which every row attends to before its own slots (`models.llama.KVCache`):
the prefill computes it once instead of once per row, and every decode step
reads its keys and values once for all rows (decode streams the whole cache
each step, so at agent context lengths this is most of the KV traffic).

Chunks: a call with more prompts than `max_batch` runs in balanced chunks (20 prompts at
max_batch 8: 7, 7, 6), and every chunk pads to the same sizes (`CallShape`: rows, cached-prefix
slots, suffix slots, output buffer, taken as the maximum over the whole call), so the call's
chunks share one prefill and one decode program instead of compiling a set per chunk; the
common prefix is the whole call's and is prefilled once for all chunks. Long agent evals cross
length buckets every few turns, and per-chunk shapes had made that several programs a turn.

The sampler keeps a reference to the model and splits it (`nnx.split`, a few
ms) at the start of every call, so samples always use the model's current
weights, in-place updates (an optimizer step, `nnx.update`) included.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.models.buckets import bucket_length, next_power_of_two
from agentrm_jax.models.llama import KVCache, LlamaForCausalLM
from agentrm_jax.sampling import prefix_cache as _pc
from agentrm_jax.sampling.prefix_cache import DEFAULT_BLOCK, DEFAULT_KV_CACHE_MB, PrefixCache
from agentrm_jax.sampling.strategies import SamplingStrategy, select_next

Prompt = str | Sequence[dict[str, str]]

MIN_PROMPT_BUCKET = 16
# A prompt of a call whose uncached part passes both is prefilled alone first (`Sampler._warm_long_misses`).
WARM_MIN_TOKENS = 256
WARM_RATIO = 4
STOP_CHECK_EVERY = 16  # decode steps between host-side stop-string checks
MIN_SHARED_PREFIX = 16  # a call's common prefix shorter than this is not split off (see _shared_length)


@flax.struct.dataclass
class DecodeState:
    """Loop carry of the decode `while_loop`. R = rows (prompts x n), N = output buffer."""

    tokens: jax.Array  # [R, N] int32 generated ids (pad after a row finished)
    lengths: jax.Array  # [R] int32 tokens generated per row, EOS included
    done: jax.Array  # [R] bool
    step: jax.Array  # [] int32 tokens generated so far (same for all rows)
    logits: jax.Array  # [R, V] float32 next-token logits
    cache: KVCache
    keys: jax.Array  # [R] PRNG keys, one per row (prompt x sample), folded with the step each token


@functools.partial(jax.jit, static_argnames=("graphdef", "n", "cache_len", "with_logits"))
def _prefill(graphdef, params, shared, ids, mask, *, n: int, cache_len: int, with_logits: bool = True):
    """ids/mask [B, P] left-padded (after `shared`, a batch-1 KVCache or None) ->
    (logits [B*n, V] or None, cache [B*n, cache_len] holding `shared`)."""
    model: LlamaForCausalLM = nnx.merge(graphdef, params)
    cache = KVCache.empty(model.config, ids.shape[0], ids.shape[1], model.dtype).replace(shared=shared)
    hidden, cache = model.backbone(ids, mask, cache)
    # left padding: the last slot is the last real token
    logits = jnp.repeat(model.logits(hidden[:, -1]), n, axis=0) if with_logits else None
    return logits, cache.pad_to(cache_len).repeat(n)


@functools.partial(jax.jit, static_argnames=("graphdef", "n", "cache_len", "with_logits"))
def _prefill_cached(graphdef, params, shared, prefix_keys, prefix_values, prefix_mask, ids, mask, *, n: int,
                    cache_len: int, with_logits: bool = True):
    """Prefill of prompt suffixes on top of cached prefixes (layout in the module docstring).

    shared: a batch-1 KVCache every row comes after, or None; prefix_keys/values: per layer
    [B, K, Pp, Dh]; prefix_mask [B, Pp] right-aligned; ids/mask [B, Ts] left-padded suffixes, written
    at slots [Pp, Pp + Ts). -> (logits [B*n, V] or None, cache [B*n, cache_len]).
    """
    model: LlamaForCausalLM = nnx.merge(graphdef, params)
    pp = prefix_mask.shape[1]
    pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, cache_len - pp), (0, 0)))
    cache = KVCache(keys=tuple(map(pad, prefix_keys)), values=tuple(map(pad, prefix_values)),
                    mask=jnp.pad(prefix_mask.astype(bool), ((0, 0), (0, cache_len - pp))),
                    index=jnp.asarray(pp, jnp.int32), shared=shared)
    hidden, cache = model.backbone(ids, mask, cache)
    logits = jnp.repeat(model.logits(hidden[:, -1]), n, axis=0) if with_logits else None
    return logits, cache.repeat(n)


@jax.jit
def _cache_of_blocks(prefix_keys, prefix_values, prefix_mask):
    """A batch-1 KVCache holding gathered blocks (per layer [1, K, P, Dh], mask [1, P]): a shared
    prefix that is wholly cached."""
    return KVCache(keys=tuple(prefix_keys), values=tuple(prefix_values), mask=prefix_mask.astype(bool),
                   index=jnp.asarray(prefix_mask.shape[1], jnp.int32))


# The state is donated: the KV cache is by far the largest buffer and each chunk
# updates it in place instead of copying it.
@functools.partial(jax.jit, static_argnames=("graphdef", "strategy"), donate_argnames=("state",))
def _decode(graphdef, params, state: DecodeState, until, eos_ids, pad_id, temperature, top_p, *,
            strategy: SamplingStrategy) -> DecodeState:
    """Generates tokens until every row is done or `step == until` ([] int32)."""
    model: LlamaForCausalLM = nnx.merge(graphdef, params)

    def cond(s: DecodeState):
        return (s.step < until) & ~jnp.all(s.done)

    def body(s: DecodeState):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(s.keys, s.step)
        token = select_next(s.logits, keys, temperature, top_p, strategy)
        token = jnp.where(s.done, pad_id, token)
        tokens = jax.lax.dynamic_update_slice_in_dim(s.tokens, token[:, None], s.step, 1)
        live = ~s.done
        lengths = s.lengths + live.astype(jnp.int32)
        done = s.done | jnp.isin(token, eos_ids)
        logits, cache = model(token[:, None], live[:, None], cache=s.cache)
        return s.replace(tokens=tokens, lengths=lengths, done=done, step=s.step + 1, logits=logits[:, 0],
                         cache=cache)

    return jax.lax.while_loop(cond, body, state)


@jax.jit
def _row_keys(key, prompt_hashes, sample_indices):
    """[R] keys: `key` folded with each row's prompt hash, then with its sample index (both uint32 [R])."""
    return jax.vmap(lambda h, j: jax.random.fold_in(jax.random.fold_in(key, h), j))(prompt_hashes, sample_indices)


def prompt_hash(ids: Sequence[int]) -> int:
    """A stable 32-bit fingerprint of a token sequence (what a prompt's random stream is keyed on)."""
    return int.from_bytes(hashlib.blake2b(np.asarray(ids, np.int64).tobytes(), digest_size=4).digest(), "little")


def compile_counts() -> dict[str, int]:
    """How many programs the prefill, decode and prefix-cache jits hold (one per distinct shape bucket)."""
    return {"prefill": _prefill._cache_size(), "prefill_cached": _prefill_cached._cache_size(),
            "shared_blocks": _cache_of_blocks._cache_size(),
            "decode": _decode._cache_size(), **_pc.compile_counts()}


def check_max_new_tokens(max_new_tokens: int, context_window: int) -> None:
    """ValueError naming the limit when `max_new_tokens` alone cannot fit the model's context window
    (every prompt has at least one token), before any prompt is looked at."""
    if max_new_tokens >= context_window:
        raise ValueError(f"max_new_tokens={max_new_tokens} does not fit the model's context window of "
                         f"{context_window} positions (max_position_embeddings), which also holds the prompt; "
                         f"ask for fewer than {context_window} new tokens")


@dataclasses.dataclass
class SamplerStats:
    """Work done by one `Sampler` (cumulative over calls)."""

    prefill_calls: int = 0  # jitted prefill invocations
    prefill_rows: int = 0  # real prompts prefilled (each once, however many samples)
    decode_rows: int = 0  # real sequences decoded (prompts x n)
    generated_tokens: int = 0  # tokens of the returned completions (sum of len(token_ids)), EOS included
    discarded_tokens: int = 0  # tokens decoded past a stop (the rest of a decode chunk) and dropped
    prefilled_tokens: int = 0  # prompt tokens run through a prefill (with the prefix cache: uncached suffixes)
    cache_hit_tokens: int = 0  # prompt tokens whose KV came from the prefix cache (per row)
    # prompt tokens of a call's common prefix that another row's prefill computed (prefilled once):
    # prefilled + cache_hit + shared = prompt tokens
    shared_tokens: int = 0
    cache_evictions: int = 0  # prefix-cache blocks evicted to make room
    warmed_rows: int = 0  # prompts that missed far more than their call's others, prefilled alone first
    cache_bytes: int = 0  # bytes of KV the prefix cache holds now


@dataclasses.dataclass(frozen=True)
class PrefillLayout:
    """Where a chunk's prefill put each prompt's tokens (what the prefix cache's insert needs)."""

    first_slots: list[int]  # per prompt: slot of its first token after the shared prefix and its cached blocks
    row_cached: list[int]  # per prompt: tokens after the shared prefix that came from the prefix cache
    shared_len: int  # tokens of the common prefix held once in `KVCache.shared` (0: none)
    shared_cached: int  # of those, tokens that came from the prefix cache
    shared_first_slot: int  # slot of `KVCache.shared` holding its first computed token


@dataclasses.dataclass(frozen=True)
class CallShape:
    """Padded sizes that every chunk of one `generate_ids` call uses at least (module docstring)."""

    rows: int  # prompt rows per chunk, a power of two (batch-padding rows start finished)
    prefix_slots: int  # slots for a row's cached blocks after the shared prefix (0: no row has any)
    suffix_slots: int  # slots for a row's uncached prompt tokens
    out_len: int  # output buffer (tokens), a power of two of max_new_tokens

    @property
    def cache_len(self) -> int:
        """KV slots per row after the shared prefix: prompt regions plus the output buffer."""
        prompt = bucket_length(self.prefix_slots + self.suffix_slots, MIN_PROMPT_BUCKET) if self.prefix_slots \
            else self.suffix_slots
        return prompt + self.out_len


def balanced_chunks(count: int, max_batch: int) -> list[tuple[int, int]]:
    """[start, end) of the fewest chunks of at most `max_batch` items, sizes differing by at most one
    (20 items at max_batch 8: 7, 7, 6), so every chunk pads to the same power-of-two row count."""
    chunks = -(-count // max_batch)
    base, extra = divmod(count, chunks)
    bounds, start = [], 0
    for i in range(chunks):
        end = start + base + (i < extra)
        bounds.append((start, end))
        start = end
    return bounds


@dataclasses.dataclass(frozen=True)
class Completion:
    """One sampled continuation."""

    text: str  # decoded, cut before any stop string, special tokens dropped
    # The generated ids that count: up to and including EOS ("eos"), all of them ("length"), or
    # ("stop") the shortest prefix whose decoded text holds a stop string / satisfies `stop_when`, i.e.
    # up to and including the token that completes the stop string (whose text is cut off).
    token_ids: tuple[int, ...]
    finish_reason: str  # "eos", "stop" or "length"


class Sampler:
    """Samples completions from an in-process model; see `generate` for the arguments.

    Each call splits the model anew, so samples follow its current weights
    (see the module docstring); compiled programs are shared by all samplers
    of models with the same structure. stop_when(text) -> bool, if given, ends
    a row (finish_reason "stop", text kept whole) at the first token whose
    decoded completion satisfies it; like stop strings it is checked every
    STOP_CHECK_EVERY tokens and the completion is trimmed back to that token.

    prefix_cache=True keeps the KV of prompts and completions (up to kv_cache_mb MB, LRU eviction,
    blocks of cache_block tokens) so later prompts that extend them prefill only the new tokens;
    kv_cache_mb=0 disables it too. The cache is emptied when the model's weights change.
    """

    def __init__(self, model: LlamaForCausalLM, tokenizer: Any, *, max_batch: int = 8,
                 stop_when: Callable[[str], bool] | None = None, prefix_cache: bool = False,
                 kv_cache_mb: float = DEFAULT_KV_CACHE_MB, cache_block: int = DEFAULT_BLOCK):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if kv_cache_mb < 0:
            raise ValueError(f"kv_cache_mb must be >= 0 (0 disables the prefix cache), got {kv_cache_mb}")
        self.cache = (PrefixCache(model.config, model.dtype, budget_mb=kv_cache_mb, block=cache_block)
                      if prefix_cache and kv_cache_mb > 0 else None)
        self.stop_when = stop_when
        self.model = model
        self.config = model.config
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.stats = SamplerStats()
        eos = set(model.config.eos_token_ids)
        if getattr(tokenizer, "eos_token_id", None) is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.eos_ids = np.asarray(sorted(eos) or [-1], np.int32)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])

    # ---------------------------------------------------------------- prompts

    def encode(self, prompt: Prompt, index: int = 0) -> list[int]:
        """Token ids of one prompt: a string verbatim, or chat messages through the chat template."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError(f"prompt {index} is empty")
            return list(self.tokenizer(prompt)["input_ids"])
        messages = list(prompt)
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise ValueError(f"prompt {index} must be a non-empty string or a non-empty list of "
                             f"{{'role', 'content'}} messages, got {prompt!r:.200}")
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def _block(self) -> int:
        """Token granularity of cached prefixes: the prefix cache's block, 1 without a cache."""
        return self.cache.block if self.cache is not None else 1

    # ---------------------------------------------------------------- generation

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                     temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, n: int = 1,
                     stop: Sequence[str] = (), seed: int = 0) -> list[list[Completion]]:
        """n completions for each tokenized prompt (see `generate`); empty stop strings are ignored."""
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        strategy = SamplingStrategy.from_args(temperature, top_p, top_k)
        check_max_new_tokens(max_new_tokens, self.config.max_position_embeddings)
        for i, ids in enumerate(prompt_ids):
            if len(ids) == 0:
                raise ValueError(f"prompt {i} has no tokens")
            if len(ids) + max_new_tokens > self.config.max_position_embeddings:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens + max_new_tokens={max_new_tokens} > the model's context "
                    f"window (max_position_embeddings={self.config.max_position_embeddings}); shorten the prompt "
                    f"or ask for at most {self.config.max_position_embeddings - len(ids)} new tokens")
        if len(prompt_ids) == 0:
            return []
        stop = tuple(s for s in stop if s)
        graphdef, params = nnx.split(self.model)  # the current weights (see the module docstring)
        if self.cache is not None:
            self.cache.sync(graphdef, params)  # KV of other weights is stale
        key = jax.random.key(seed)
        seen: dict[tuple[int, ...], int] = {}
        streams = []  # (prompt hash, first sample index) of each prompt
        for ids in prompt_ids:
            ids = tuple(int(t) for t in ids)
            k = seen.get(ids, 0)
            seen[ids] = k + 1
            streams.append((prompt_hash(ids), k * n))
        hits = [self.cache.lookup(p) for p in prompt_ids] if self.cache is not None else [[] for _ in prompt_ids]
        if self.cache is not None:
            hits = self._warm_long_misses(graphdef, params, prompt_ids, hits)
        shared_len = self._shared_length(prompt_ids, n)
        chunks = balanced_chunks(len(prompt_ids), self.max_batch)
        shape = self._call_shape(prompt_ids, hits, shared_len, chunks, next_power_of_two(max_new_tokens, 8))
        shared, shared_cached, shared_first = self._prefill_shared(graphdef, params, prompt_ids, hits, shared_len)
        out: list[list[Completion]] = []
        for start, end in chunks:
            batch = prompt_ids[start:end]
            if start and self.cache is not None:
                # Earlier chunks inserted blocks and may have evicted some: look again, but use no more
                # blocks than planned (rows that share blocks only with an earlier chunk's rows would
                # otherwise get a longer prefix region than `shape` has, and a program of their own).
                hits[start:end] = [self.cache.lookup(p)[:len(h)] for p, h in zip(batch, hits[start:end])]
            logits, cache, layout = self._prefill_chunk(graphdef, params, batch, hits[start:end], shared, shared_len,
                                                        shared_cached, shared_first, shape, n)
            results, cache = self._decode_batch(graphdef, params, batch, logits, cache, shape, streams[start:end],
                                                max_new_tokens, strategy, temperature, top_p, n, stop, key)
            shared = cache.shared  # the decode donated the chunk's state: the next chunk reads its copy
            if self.cache is not None:
                self._store(batch, results, cache, layout, n, shared_new=start == 0)
            out.extend(results)
        return out

    def _store(self, batch, results, cache, layout: PrefillLayout, n: int, *, shared_new: bool) -> None:
        """Keeps a chunk's KV in the prefix cache: the common prefix's new blocks (once a call) and every
        sample's prompt + kept completion (the next turn's context extends one of them)."""
        if shared_new and layout.shared_len > layout.shared_cached:
            self.cache.insert(cache.shared.keys, cache.shared.values,
                              [(0, batch[0][:layout.shared_len], layout.shared_cached, layout.shared_first_slot)])
        rows = [(r * n + j, [*batch[r], *results[r][j].token_ids], layout.shared_len + layout.row_cached[r],
                 layout.first_slots[r]) for r in range(len(batch)) for j in range(n)]
        self.cache.insert(cache.keys, cache.values, rows)
        self.stats.cache_evictions = self.cache.stats.evictions
        self.stats.cache_bytes = self.cache.bytes_held

    def _warm_long_misses(self, graphdef, params, prompts, hits):
        """Prefills alone, into the prefix cache, the uncached bulk of each prompt that misses far more
        than the call's typical one; returns the lookups of every prompt after those inserts.

        Every chunk of a call pads its rows to the call's longest uncached suffix, so one context that
        misses (cut anew to fit the window, or evicted) in a lockstep turn of 20 would make every row
        prefill thousands of padding positions. A prompt whose uncached part is over WARM_MIN_TOKENS and
        WARM_RATIO x the median is prefilled by itself at batch 1 up to the median's length from its end
        (whole blocks) and stored; it then joins its chunk as a hit. Exact, as every cache hit is. Only
        where the cache has free room for it (a full cache would evict the other rows' hits to make it);
        a cache too small for a lockstep group's contexts loses this, as it loses their hits.
        """
        block = self.cache.block
        if len(prompts) < 2:
            return hits
        uncached = [len(p) - len(h) * block for p, h in zip(prompts, hits)]
        typical = int(np.median(uncached))
        limit = max(WARM_MIN_TOKENS, WARM_RATIO * typical)
        warm = [i for i, u in enumerate(uncached) if u > limit]
        if not warm:
            return hits
        for i in warm:
            h = self.cache.lookup(prompts[i])  # again: an earlier warm's insert may have evicted blocks
            cached = len(h) * block
            end = (len(prompts[i]) - typical) // block * block
            # only into free room: evicting would take the blocks this call's other rows just looked up
            if end <= cached or (end - cached) // block > self.cache.capacity - self.cache.blocks:
                continue
            _, cache, firsts = self._prefill_rows(graphdef, params, [prompts[i][:end]], [h], None, 1, None,
                                                  with_logits=False)
            stored = self.cache.insert(cache.keys, cache.values, [(0, prompts[i][:end], cached, firsts[0])])
            # the warm counted `cached` as hits and the rest as prefilled; the chunk counts all `end` as hits
            self.stats.cache_hit_tokens -= end
            self.stats.warmed_rows += stored == (end - cached) // block
        self.stats.cache_evictions = self.cache.stats.evictions
        return [self.cache.lookup(p) for p in prompts]

    def _shared_length(self, prompts, n) -> int:
        """Tokens of the call's common prefix to prefill once and hold once (`KVCache.shared`): the
        longest common prefix, leaving every row at least one token (its logits start the decode),
        cut to whole cache blocks; 0 when fewer than MIN_SHARED_PREFIX or only one row decodes."""
        if len(prompts) * n < 2:
            return 0
        limit = min(len(p) for p in prompts) - 1
        first = np.asarray(prompts[0][:limit])
        for p in prompts[1:]:
            differ = np.flatnonzero(np.asarray(p[:limit]) != first[:limit])
            if differ.size:
                limit = int(differ[0])
        shared = limit // self._block * self._block
        return shared if shared >= MIN_SHARED_PREFIX else 0

    def _prefix_slots(self, cached_tokens: int) -> int:
        """Bucketed slots (whole blocks) for a row's cached prefix of `cached_tokens` tokens."""
        block = self.cache.block
        return -(-bucket_length(cached_tokens, block) // block) * block

    def _call_shape(self, prompts, hits, shared_len, chunks, out_len) -> CallShape:
        """The sizes every chunk pads to: the largest any row of the call needs (from the call's first
        lookups; a chunk whose later lookup needs more pads further)."""
        block = self._block
        cached = [len(h[shared_len // block:]) * block for h in hits]
        suffix = max(len(p) - shared_len - c for p, c in zip(prompts, cached))
        return CallShape(rows=next_power_of_two(max(end - start for start, end in chunks)),
                         prefix_slots=self._prefix_slots(max(cached)) if any(cached) else 0,
                         suffix_slots=bucket_length(suffix, MIN_PROMPT_BUCKET),
                         out_len=out_len)

    def _prefill_shared(self, graphdef, params, prompts, hits, shared_len):
        """(batch-1 KVCache of the call's common prefix or None, its cached tokens, the slot of its first
        computed token). Prefilled once on top of its cached blocks, or gathered when wholly cached."""
        if not shared_len:
            return None, 0, 0
        block = self._block
        shared_hits = hits[0][:shared_len // block] if self.cache is not None else []
        shared_cached = len(shared_hits) * block
        self.stats.shared_tokens += (shared_len - shared_cached) * (len(prompts) - 1)
        if shared_cached == shared_len:
            table, prefix_mask = self._prefix_table([shared_hits], 1)
            self.stats.cache_hit_tokens += shared_cached * len(prompts)
            return _cache_of_blocks(*self.cache.gather(table), jnp.asarray(prefix_mask)), shared_cached, 0
        # counts the computed part as prefilled and the cached part as one row's hits
        _, shared, firsts = self._prefill_rows(graphdef, params, [prompts[0][:shared_len]], [shared_hits], None,
                                               1, None, with_logits=False)
        self.stats.cache_hit_tokens += shared_cached * (len(prompts) - 1)
        return shared, shared_cached, firsts[0]

    def _prefix_table(self, hits, rows_b, min_slots: int = 0):
        """Page table [rows_b, nb] (0: the scratch page) and right-aligned mask [rows_b, nb * block] of
        rows' cached blocks, nb bucketed (and at least min_slots / block)."""
        block = self.cache.block
        prefix_len = max(self._prefix_slots(max(len(h) for h in hits) * block), min_slots)
        table = np.zeros((rows_b, prefix_len // block), np.int32)
        prefix_mask = np.zeros((rows_b, prefix_len), np.int32)
        for r, h in enumerate(hits):
            if h:
                table[r, len(table[r]) - len(h):] = [node.page for node in h]
                prefix_mask[r, prefix_len - len(h) * block:] = 1
        return table, prefix_mask

    def _prefill_rows(self, graphdef, params, seqs, hits, shared, n, shape: CallShape | None, with_logits=True):
        """Prefill of token sequences after `shared` (None or a batch-1 KVCache), each on top of its
        cached blocks (`hits`, lists of blocks; layout in the module docstring), padded to at least
        `shape` (None: the sequences' own buckets and no output buffer). Returns (logits [R, V] or None,
        cache, the slot of each sequence's first uncached token)."""
        floor = shape or CallShape(rows=1, prefix_slots=0, suffix_slots=0, out_len=0)
        rows_b = max(next_power_of_two(len(seqs)), floor.rows)
        block = self._block
        cached = [len(h) * block for h in hits]
        suffixes = [len(p) - c for p, c in zip(seqs, cached)]
        suffix_len = max(bucket_length(max(suffixes), MIN_PROMPT_BUCKET), floor.suffix_slots)
        ids = np.full((rows_b, suffix_len), self.pad_id, np.int32)
        mask = np.zeros((rows_b, suffix_len), np.int32)
        for r, (p, c) in enumerate(zip(seqs, cached)):
            ids[r, suffix_len - len(p) + c:] = p[c:]
            mask[r, suffix_len - len(p) + c:] = 1
        self.stats.prefilled_tokens += sum(suffixes)
        self.stats.cache_hit_tokens += sum(cached)

        def padded_cache_len(prefix_len: int) -> int:  # this prefill's own slots, at least the call's
            own = dataclasses.replace(floor, prefix_slots=prefix_len, suffix_slots=suffix_len)
            return max(own.cache_len, floor.cache_len)

        if not any(cached):
            cache_len = padded_cache_len(0)
            logits, cache = _prefill(graphdef, params, shared, jnp.asarray(ids), jnp.asarray(mask), n=n,
                                     cache_len=cache_len, with_logits=with_logits)
            return logits, cache, [suffix_len - s for s in suffixes]
        table, prefix_mask = self._prefix_table(hits, rows_b, floor.prefix_slots)
        prefix_len = prefix_mask.shape[1]
        prefix_keys, prefix_values = self.cache.gather(table)
        # Total slots bucketed too (CallShape.cache_len), so the decode programs are shared with the plain path's.
        cache_len = padded_cache_len(prefix_len)
        logits, cache = _prefill_cached(graphdef, params, shared, prefix_keys, prefix_values,
                                        jnp.asarray(prefix_mask), jnp.asarray(ids), jnp.asarray(mask), n=n,
                                        cache_len=cache_len, with_logits=with_logits)
        return logits, cache, [prefix_len + suffix_len - s for s in suffixes]

    def _prefill_chunk(self, graphdef, params, batch, hits, shared, shared_len, shared_cached, shared_first,
                       shape: CallShape, n):
        """Logits [R, V], KV cache and `PrefillLayout` of one chunk's prompts after the call's common
        prefix (`shared`, its first `shared_len` tokens), each on top of its cached blocks (`hits`: the
        full lookups), padded to `shape`."""
        block = self._block
        row_hits = [h[shared_len // block:] for h in hits]
        logits, cache, firsts = self._prefill_rows(graphdef, params, [p[shared_len:] for p in batch], row_hits,
                                                   shared, n, shape)
        self.stats.prefill_calls += 1
        self.stats.prefill_rows += len(batch)
        return logits, cache, PrefillLayout(first_slots=firsts, row_cached=[len(h) * block for h in row_hits],
                                            shared_len=shared_len, shared_cached=shared_cached,
                                            shared_first_slot=shared_first)

    def _decode_batch(self, graphdef, params, batch, logits, cache, shape: CallShape, streams, max_new_tokens,
                      strategy, temperature, top_p, n, stop, key):
        """(completions per prompt, the final KV cache) of a prefilled chunk."""
        real = len(batch)
        rows_b = max(next_power_of_two(real), shape.rows)
        out_len = shape.out_len
        rows = rows_b * n
        done = np.repeat(np.arange(rows_b) >= real, n)  # batch-padding rows start finished
        hashes = np.zeros(rows, np.uint32)
        samples = np.zeros(rows, np.uint32)
        for r, (h, first) in enumerate(streams):
            hashes[r * n:(r + 1) * n] = h
            samples[r * n:(r + 1) * n] = first + np.arange(n)
        state = DecodeState(tokens=jnp.full((rows, out_len), self.pad_id, jnp.int32),
                            lengths=jnp.zeros((rows,), jnp.int32), done=jnp.asarray(done),
                            step=jnp.zeros((), jnp.int32), logits=logits, cache=cache,
                            keys=_row_keys(key, jnp.asarray(hashes), jnp.asarray(samples)))
        stopped = np.zeros(rows, bool)
        clean = np.zeros(rows, np.int64)  # leading tokens of each row known to hold no stop
        args = (jnp.asarray(self.eos_ids), jnp.int32(self.pad_id), jnp.float32(temperature),
                jnp.float32(top_p))
        step = 0
        checking = bool(stop) or self.stop_when is not None
        while step < max_new_tokens:
            step = min(max_new_tokens, step + STOP_CHECK_EVERY) if checking else max_new_tokens
            state = _decode(graphdef, params, state, jnp.int32(step), *args, strategy=strategy)
            if checking:
                tokens, lengths, done = jax.device_get((state.tokens, state.lengths, state.done))
                newly = np.zeros(rows, bool)
                for r in np.flatnonzero(~done):
                    newly[r] = self._has_stop(tokens[r, :lengths[r]], stop)
                    if not newly[r]:
                        clean[r] = lengths[r]
                if newly.any():
                    stopped |= newly
                    state = state.replace(done=jnp.asarray(done | newly))
            if bool(jax.device_get(jnp.all(state.done))):
                break
        tokens, lengths, done = jax.device_get((state.tokens, state.lengths, state.done))
        results = []
        for r in range(real):
            row = []
            for j in range(n):
                k = r * n + j
                ids_k = tuple(int(t) for t in tokens[k, :lengths[k]])
                completion = self._completion(ids_k, stop, stopped[k], int(clean[k]))
                self.stats.generated_tokens += len(completion.token_ids)
                self.stats.discarded_tokens += len(ids_k) - len(completion.token_ids)
                row.append(completion)
            results.append(row)
        self.stats.decode_rows += real * n
        return results, state.cache

    def _stops(self, text: str, stop: tuple[str, ...]) -> bool:
        return any(s in text for s in stop) or (self.stop_when is not None and self.stop_when(text))

    def _has_stop(self, ids, stop) -> bool:
        return self._stops(self.tokenizer.decode(ids, skip_special_tokens=True), stop)

    def _completion(self, ids: tuple[int, ...], stop: tuple[str, ...], stopped: bool, clean: int) -> Completion:
        """One row's completion from its generated ids; the first `clean` ids were checked and hold no stop.

        A row whose text holds a stop (a stop string, or `stop_when` holds) ends at the first token k
        with a stop in decode(ids[:k]) (found by decoding the prefixes after `clean`: at most one decode
        chunk), whether the host check, EOS or the length limit ended its decoding.
        """
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if stopped or self._stops(text, stop):
            k = next((k for k in range(clean + 1, len(ids) + 1) if self._has_stop(ids[:k], stop)), len(ids))
            text = self.tokenizer.decode(ids[:k], skip_special_tokens=True)
            found = [text.find(s) for s in stop if s in text]
            return Completion(text=text[:min(found)] if found else text, token_ids=ids[:k], finish_reason="stop")
        reason = "eos" if ids and ids[-1] in set(self.eos_ids.tolist()) else "length"
        return Completion(text=text, token_ids=ids, finish_reason=reason)

    def generate(self, prompts: Sequence[Prompt], **kwargs) -> list[list[Completion]]:
        """n completions per prompt (strings verbatim, message lists through the chat template)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], dict)):
            raise ValueError("prompts must be a list of prompts; wrap a single prompt in a list")
        if len(prompts) == 0:
            raise ValueError("prompts is empty")
        return self.generate_ids([self.encode(p, i) for i, p in enumerate(prompts)], **kwargs)


def generate(model: LlamaForCausalLM, tokenizer: Any, prompts: Sequence[Prompt], *, max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, n: int = 1,
             stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
    """n completions for each prompt, as text.

    prompts: strings (tokenized as they are) or chat message lists
      (`[{"role": "user", "content": ...}]`, rendered with the tokenizer's chat
      template and a generation prompt).
    temperature 0 is greedy; otherwise softmax(logits / temperature), optionally
    restricted to the top_k tokens and/or the top_p probability mass.
    Each completion ends at EOS, before the first of `stop` to be completed,
    or after max_new_tokens tokens. Deterministic for a given seed; a prompt's
    samples do not depend on the other prompts (see the module docstring).
    Returns `len(prompts)` lists of `n` strings.
    """
    sampler = Sampler(model, tokenizer)
    out = sampler.generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           top_k=top_k, n=n, stop=stop, seed=seed)
    return [[c.text for c in row] for row in out]
