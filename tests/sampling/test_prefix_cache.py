"""Prefix KV cache: a prefill on top of cached blocks gives what a whole-prompt prefill gives.

Exactness is checked two ways on tiny random Llama and Qwen2-style (attention bias) models:
greedy completions with and without the cache are identical, and the logits at every generated
token (teacher-forced through the sampler's own prefill, cache hits included) agree to 1e-5.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import KVCache, init_model
from agentrm_jax.sampling import Sampler, compile_counts
from agentrm_jax.sampling.sampler import balanced_chunks

EOS = 2
VOCAB = 101


class IdTokenizer:
    """Token i <-> word 'w{i}'."""

    eos_token_id = EOS
    pad_token_id = EOS

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(w[1:]) for w in text.split()]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i == EOS))


def _sharpen(model, scale=4.0, biases=False, seed=0):
    """Weights x scale (fewer greedy near-ties); biases random when asked (zero-initialised otherwise)."""
    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(model)
    flat = dict(nnx.to_flat_state(state))
    for path, var in flat.items():
        name = str(path[-1])
        if name.endswith("bias"):
            if biases:
                var[...] = jnp.asarray(rng.normal(0, 0.5, var[...].shape), var[...].dtype)
        elif "norm" not in "/".join(map(str, path)):
            var[...] = var[...] * scale
    nnx.update(model, nnx.from_flat_state(flat))
    return model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request):
    if request.param == "llama":
        cfg = ModelConfig.tiny(vocab_size=VOCAB, max_position_embeddings=1024)
    else:
        cfg = ModelConfig.tiny(vocab_size=VOCAB, max_position_embeddings=1024, model_type="qwen2", qkv_bias=True,
                               num_kv_heads=1)
    m = _sharpen(init_model(cfg, seed=3), biases=request.param == "qwen2")
    assert not cfg.qkv_bias or float(jnp.abs(m.layers[0].attn.k_bias[...]).max()) > 0
    return m


def _tokens(rng, n):
    return rng.integers(3, VOCAB, size=int(n)).tolist()


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _step(graphdef, params, token, live, cache):
    logits, cache = nnx.merge(graphdef, params)(token[:, None], live[:, None], cache=cache)
    return logits[:, 0], cache


def forced_logits(sampler, prompts, continuations):
    """Per prompt: logits [len(continuation) + 1, V] after the prompt and after each continuation token,
    through the sampler's prefill (its cache hits as a `generate_ids` call now would get them)."""
    graphdef, params = nnx.split(sampler.model)
    if sampler.cache is not None:
        sampler.cache.sync(graphdef, params)  # as generate_ids does
    hits = [sampler.cache.lookup(p) for p in prompts] if sampler.cache is not None else [[] for _ in prompts]
    steps = max(len(c) for c in continuations)
    stats = dataclasses.replace(sampler.stats)
    shared_len = sampler._shared_length(prompts, 1)
    shape = sampler._call_shape(prompts, hits, shared_len, [(0, len(prompts))], steps + 8)
    shared, shared_cached, shared_first = sampler._prefill_shared(graphdef, params, prompts, hits, shared_len)
    logits, cache, _ = sampler._prefill_chunk(graphdef, params, prompts, hits, shared, shared_len, shared_cached,
                                              shared_first, shape, 1)
    sampler.stats = stats  # this look is not sampler work
    rows = logits.shape[0]
    out = [np.asarray(logits)]
    for t in range(steps):
        token = np.full(rows, EOS, np.int32)
        live = np.zeros(rows, bool)
        for r, c in enumerate(continuations):
            if t < len(c):
                token[r], live[r] = c[t], True
        logits, cache = _step(graphdef, params, jnp.asarray(token), jnp.asarray(live), cache)
        out.append(np.asarray(logits))
    stacked = np.stack(out, axis=1)  # [rows, steps + 1, V]
    return [stacked[r, :len(c) + 1] for r, c in enumerate(continuations)]


def check_turn(cached, plain, prompts, max_new_tokens=12):
    """One call of both samplers: identical greedy completions and per-token logits within 1e-5."""
    want = plain.generate_ids(prompts, max_new_tokens=max_new_tokens)
    conts = [list(row[0].token_ids) for row in want]
    for a, b in zip(forced_logits(cached, prompts, conts), forced_logits(plain, prompts, conts)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    got = cached.generate_ids(prompts, max_new_tokens=max_new_tokens)
    assert [r[0].token_ids for r in got] == [r[0].token_ids for r in want]
    return conts


def test_a_gap_of_masked_slots_changes_neither_positions_nor_attention(model):
    """The layout the cache relies on, checked on the model alone: prefix left-padded in its region,
    suffix left-padded in the next one, logits equal to the unpadded whole sequence's."""
    rng = np.random.default_rng(0)
    seq = _tokens(rng, 45)
    prefix, suffix = seq[:32], seq[32:]
    whole = np.asarray(model(jnp.asarray([seq]), jnp.ones((1, 45), jnp.int32)))[0]
    pp, ts = 48, 32  # 16 pad slots before the prefix, 19 between prefix and suffix
    cache = KVCache.empty(model.config, 1, pp + ts)
    ids = np.full((1, pp), EOS, np.int32)
    ids[0, pp - 32:] = prefix
    mask = (np.arange(pp) >= pp - 32).astype(np.int32)[None]
    _, cache = model(jnp.asarray(ids), jnp.asarray(mask), cache=cache)
    ids = np.full((1, ts), EOS, np.int32)
    ids[0, ts - len(suffix):] = suffix
    mask = (np.arange(ts) >= ts - len(suffix)).astype(np.int32)[None]
    logits, _ = model(jnp.asarray(ids), jnp.asarray(mask), cache=cache)
    np.testing.assert_allclose(np.asarray(logits)[0, ts - len(suffix):], whole[32:], atol=1e-5, rtol=0)


def test_mixed_hit_lengths_in_one_left_padded_batch(model):
    rng = np.random.default_rng(1)
    cached = Sampler(model, IdTokenizer(), prefix_cache=True)
    plain = Sampler(model, IdTokenizer())
    base = [_tokens(rng, 70), _tokens(rng, 37)]
    check_turn(cached, plain, base)
    assert cached.stats.cache_hit_tokens == 0 and cached.stats.prefilled_tokens == 107
    prompts = [base[0] + _tokens(rng, 5),  # long hit (64 tokens), short suffix
               base[1][:20] + _tokens(rng, 50),  # diverges inside block 2: a 16-token hit
               _tokens(rng, 9),  # no hit, shortest row: most left padding
               base[0][:33]]  # hit of 32 tokens, a 1-token suffix
    assert [len(cached.cache.lookup(p)) * 16 for p in prompts] == [64, 16, 0, 32]
    before = dataclasses.replace(cached.stats)
    check_turn(cached, plain, prompts)
    assert cached.stats.cache_hit_tokens - before.cache_hit_tokens == 112
    assert cached.stats.prefilled_tokens - before.prefilled_tokens == sum(map(len, prompts)) - 112


def _alone(sampler, prompts, conts):
    """Per-prompt logits of each prompt prefilled and decoded on its own (no shared prefix, no cache)."""
    return [forced_logits(sampler, [p], [c])[0] for p, c in zip(prompts, conts)]


@pytest.mark.parametrize("with_cache", [False, True])
def test_a_batch_common_prefix_is_prefilled_once_and_stays_exact(model, with_cache):
    """Lockstep episodes: every context starts with the same system prompt and example. The common
    prefix is prefilled once (at batch 1) and held once; each row's logits and greedy tokens are
    those of the row alone, over two turns (the second one's prefix comes from the cache)."""
    rng = np.random.default_rng(11)
    system = _tokens(rng, 75)
    contexts = [system + _tokens(rng, k) for k in (12, 30, 7)]
    sampler = Sampler(model, IdTokenizer(), prefix_cache=with_cache)
    alone = Sampler(model, IdTokenizer(), max_batch=1)
    for turn in range(2):
        before = dataclasses.replace(sampler.stats)
        want = [alone.generate_ids([c], max_new_tokens=10)[0] for c in contexts]  # one row a call: no sharing
        got = sampler.generate_ids(contexts, max_new_tokens=10)
        conts = [list(r[0].token_ids) for r in want]
        assert [r[0].token_ids for r in got] == [tuple(c) for c in conts]
        for a, b in zip(forced_logits(sampler, contexts, conts), _alone(alone, contexts, conts)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        prefilled = sampler.stats.prefilled_tokens - before.prefilled_tokens
        hits = sampler.stats.cache_hit_tokens - before.cache_hit_tokens
        shared = sampler.stats.shared_tokens - before.shared_tokens
        assert prefilled + hits + shared == sum(map(len, contexts))
        shared_len = 64 if with_cache else 75  # whole cache blocks with the cache
        if turn == 0 or not with_cache:
            assert shared == 2 * shared_len and prefilled == sum(map(len, contexts)) - 2 * shared_len
        else:  # the prefix and each row's own earlier blocks came from the cache
            assert shared == 0 and hits >= 3 * shared_len and prefilled <= sum(len(c) + 5 + 16 for c in conts)
        contexts = [c + k + _tokens(rng, 5) for c, k in zip(contexts, conts)]
    assert alone.stats.shared_tokens == 0


def test_multi_turn_episode_and_completions_are_reused(model):
    """Each prompt extends the previous prompt with its completion and an observation: from turn 2 on
    the prefill computes little more than the new tokens."""
    rng = np.random.default_rng(2)
    cached = Sampler(model, IdTokenizer(), prefix_cache=True)
    plain = Sampler(model, IdTokenizer())
    contexts = [_tokens(rng, 90), _tokens(rng, 41)]
    for turn in range(5):
        before = cached.stats.prefilled_tokens
        conts = check_turn(cached, plain, contexts)
        if turn:  # everything but the tail of the last block and the new tokens came from the cache
            assert cached.stats.prefilled_tokens - before <= sum(len(c) + 12 + 16 for c in conts)
        contexts = [c + k + _tokens(rng, 11) for c, k in zip(contexts, conts)]
    assert cached.stats.cache_hit_tokens > 2 * cached.stats.prefilled_tokens


def test_eviction_under_a_tiny_budget_stays_exact(model):
    cfg = model.config
    page = 2 * cfg.num_layers * cfg.num_kv_heads * 16 * cfg.head_dim * 4
    cached = Sampler(model, IdTokenizer(), prefix_cache=True, kv_cache_mb=10.5 * page / 2**20)
    assert cached.cache.capacity == 10
    plain = Sampler(model, IdTokenizer())
    rng = np.random.default_rng(3)
    contexts = [_tokens(rng, 60), _tokens(rng, 75), _tokens(rng, 50)]
    for _ in range(4):
        conts = check_turn(cached, plain, contexts)
        contexts = [c + k + _tokens(rng, 7) for c, k in zip(contexts, conts)]
        assert cached.cache.blocks <= 10 and cached.stats.cache_bytes == cached.cache.blocks * page
    assert cached.stats.cache_evictions > 0 and cached.stats.cache_hit_tokens > 0
    assert all(n.pinned == 0 for n in cached.cache._by_page.values())  # every insert released its blocks


def test_n_samples_share_the_prompt_and_their_completions_are_stored(model):
    rng = np.random.default_rng(4)
    sampler = Sampler(model, IdTokenizer(), prefix_cache=True)
    prompt = _tokens(rng, 40)
    [row] = sampler.generate_ids([prompt], max_new_tokens=30, n=3, temperature=1.0, seed=1)
    assert sampler.stats.prefill_rows == 1
    assert len({c.token_ids for c in row}) > 1
    for c in row:  # each sample's prompt + completion is stored, block-aligned
        seq = prompt + list(c.token_ids) + [5]
        assert len(sampler.cache.lookup(seq)) == (len(seq) - 1) // 16
    # blocks: the prompt's 2 full ones once, then each sample's own
    assert sampler.cache.blocks == 2 + sum((40 + len(c.token_ids)) // 16 - 2 for c in row)


def test_changed_weights_empty_the_cache(model):
    rng = np.random.default_rng(5)
    m = init_model(model.config, seed=9)
    cached = Sampler(m, IdTokenizer(), prefix_cache=True)
    prompt = _tokens(rng, 50)
    cached.generate_ids([prompt], max_new_tokens=8)
    assert cached.cache.blocks > 0
    _sharpen(m, scale=4.0)  # in place, as an optimizer step would
    plain = Sampler(m, IdTokenizer())
    check_turn(cached, plain, [prompt + _tokens(rng, 3)])
    assert cached.cache.stats.invalidations == 1


def test_knobs_and_errors(model):
    assert Sampler(model, IdTokenizer(), prefix_cache=True, kv_cache_mb=0).cache is None
    assert Sampler(model, IdTokenizer()).cache is None
    with pytest.raises(ValueError, match="kv_cache_mb must be >= 0"):
        Sampler(model, IdTokenizer(), prefix_cache=True, kv_cache_mb=-1)


def test_compiles_are_bounded_over_a_30_turn_episode():
    """A context growing from ~300 to ~1000 tokens over 30 turns visits a handful of (prefix, suffix)
    buckets; after the episode, a second episode with the same shapes compiles nothing."""
    model = init_model(ModelConfig.tiny(vocab_size=VOCAB, max_position_embeddings=1200), seed=4)

    def episode():
        rng = np.random.default_rng(6)
        sampler = Sampler(model, IdTokenizer(), prefix_cache=True, max_batch=2)
        contexts = [_tokens(rng, 300), _tokens(rng, 280)]
        for _ in range(30):
            rows = sampler.generate_ids(contexts, max_new_tokens=8)
            contexts = [c + list(r[0].token_ids) + _tokens(rng, 14 + len(c) % 5) for c, r in zip(contexts, rows)]
        return sampler

    before = compile_counts()
    sampler = episode()
    after = compile_counts()
    grown = {k: after[k] - before[k] for k in after}
    assert sampler.stats.cache_hit_tokens > 5 * sampler.stats.prefilled_tokens
    # prefix buckets 256..1024 in 64/128 steps (<= 9), suffix buckets 16/32/64 (two seen per prefix at most)
    assert grown["prefill"] <= 1 and grown["prefill_cached"] <= 12, grown
    assert grown["decode"] <= 9 and grown["cache_gather"] <= 10, grown
    assert grown["cache_store"] <= grown["decode"] + grown["cache_grow"] + 2, grown  # one per cache shape
    again = compile_counts()
    episode()
    assert compile_counts() == again


def test_balanced_chunks_pad_to_one_row_bucket():
    assert balanced_chunks(20, 8) == [(0, 7), (7, 14), (14, 20)]
    assert balanced_chunks(8, 8) == [(0, 8)] and balanced_chunks(1, 8) == [(0, 1)]
    assert balanced_chunks(9, 4) == [(0, 3), (3, 6), (6, 9)]
    for count in range(1, 40):
        sizes = [b - a for a, b in balanced_chunks(count, 8)]
        assert sum(sizes) == count and max(sizes) <= 8 and max(sizes) - min(sizes) <= 1
        assert len(sizes) == -(-count // 8)


def test_the_chunks_of_a_lockstep_call_share_one_decode_program_and_stay_exact():
    """20 lockstep rows at max_batch 8 run as chunks 7, 7, 6 padded to the same shapes: one decode
    program a call (per-chunk shapes compiled one per chunk bucket, and blocks stored by an earlier
    chunk gave a later one a longer prefix region), and each row's greedy tokens are those of the row
    alone, over three turns that move from fresh prefills to cached prefixes."""
    config = ModelConfig.tiny(vocab_size=VOCAB, max_position_embeddings=700, hidden_size=32, head_dim=8)
    model = _sharpen(init_model(config, seed=8))  # a config no other test uses: its programs are its own
    rng = np.random.default_rng(5)
    system = _tokens(rng, 70)
    # three task kinds with their own 40-token instructions, as twx's games have: a row of a later chunk
    # shares blocks with an earlier chunk's rows of its kind, which that chunk has just stored
    kinds = [_tokens(rng, 40) for _ in range(3)]
    contexts = [system + kinds[i % 3] + _tokens(rng, int(k)) for i, k in enumerate(rng.integers(5, 90, size=20))]
    sampler = Sampler(model, IdTokenizer(), prefix_cache=True, max_batch=8)
    alone = Sampler(model, IdTokenizer(), max_batch=1)
    for turn in range(3):
        before = compile_counts()
        got = sampler.generate_ids(contexts, max_new_tokens=6)
        grown = {k: v - before[k] for k, v in compile_counts().items()}
        assert grown["decode"] <= 1 and grown["prefill"] + grown["prefill_cached"] <= 2, (turn, grown)
        want = [alone.generate_ids([c], max_new_tokens=6)[0][0].token_ids for c in contexts]
        assert [r[0].token_ids for r in got] == want, turn
        contexts = [c + list(w) + _tokens(rng, 9) for c, w in zip(contexts, want)]
    assert sampler.stats.cache_hit_tokens > sampler.stats.prefilled_tokens


class _Recording:
    def __init__(self, policy):
        self.policy, self.contexts = policy, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.contexts.extend(contexts)
        return self.policy.sample(contexts, n=n, temperature=temperature, seed=seed)


@pytest.mark.real_model
def test_bundled_model_plays_the_same_maze_episode_and_prefills_little(bundled_ours):
    from agentrm_jax.agents.loop import run_episode
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.envs import make
    from agentrm_jax.sampling.prefix_cache import distinct_prefix_tokens

    model, tokenizer = bundled_ours
    runs = {}
    for cached in (True, False):
        policy = JaxPolicy(model, tokenizer, max_new_tokens=48, prefix_cache=cached)
        recording = _Recording(policy)
        trajectory = run_episode(make("maze", split="test", max_turns=6), recording, seed=3)
        runs[cached] = (trajectory, policy.stats, recording.contexts)
    (with_cache, stats, contexts), (without, plain_stats, _) = runs[True], runs[False]
    assert 4 <= len(with_cache.steps) <= 6 or with_cache.success
    assert [s.action for s in with_cache.steps] == [s.action for s in without.steps]
    assert with_cache.meta["raw"] == without.meta["raw"]
    distinct = distinct_prefix_tokens([policy._encode(c) for c in contexts])
    assert plain_stats.prefilled_tokens == plain_stats.prompt_tokens and plain_stats.cache_hit_tokens == 0
    assert stats.prefilled_tokens + stats.cache_hit_tokens == stats.prompt_tokens
    assert stats.prefilled_tokens <= 1.2 * distinct, (stats, distinct)
    assert 0 < stats.cache_bytes <= 512 * 2**20


def test_a_row_that_misses_far_more_than_its_batch_mates_is_prefilled_alone_first(model):
    """A lockstep turn where one context was cut anew (it misses the cache) and the others extend their
    cached turns: the missing row is prefilled alone into the cache first, so the call pads to the
    others' short suffixes, not to its ~500 tokens; tokens equal each row alone; the token counts add up."""
    rng = np.random.default_rng(11)
    system = _tokens(rng, 48)
    contexts = [system + _tokens(rng, 20 + 3 * i) for i in range(6)]
    sampler = Sampler(model, IdTokenizer(), prefix_cache=True, max_batch=4)
    alone = Sampler(model, IdTokenizer(), max_batch=1)
    first = sampler.generate_ids(contexts, max_new_tokens=4)
    contexts = [c + list(r[0].token_ids) + _tokens(rng, 5) for c, r in zip(contexts, first)]
    contexts[2] = system + _tokens(rng, 500)  # cut anew: nothing after the system prompt is cached
    shapes = []
    plan = sampler._call_shape
    sampler._call_shape = lambda *a: shapes.append(plan(*a)) or shapes[-1]
    before = dataclasses.replace(sampler.stats)
    got = sampler.generate_ids(contexts, max_new_tokens=4)
    assert [r[0].token_ids for r in got] == [alone.generate_ids([c], max_new_tokens=4)[0][0].token_ids
                                             for c in contexts]
    assert sampler.stats.warmed_rows - before.warmed_rows == 1
    assert shapes[-1].suffix_slots <= 64  # the others' ~10 new tokens, bucketed; ~500 without the warm
    work = {f: getattr(sampler.stats, f) - getattr(before, f)
            for f in ("prefilled_tokens", "cache_hit_tokens", "shared_tokens")}
    assert sum(work.values()) == sum(map(len, contexts)), work
    assert work["prefilled_tokens"] < 500 + 6 * 16
