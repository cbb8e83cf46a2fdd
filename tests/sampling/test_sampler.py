"""Sampler: greedy parity with transformers, shared prefill, bounded compiles, stops, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM as TorchLlama

import jax.numpy as jnp

from agentrm_jax.models import load_model
from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import init_model
from agentrm_jax.sampling import Sampler, SamplingStrategy, compile_counts, generate, select_next

EOS = 2


class IdTokenizer:
    """A stand-in tokenizer over a tiny vocabulary: token i <-> the word 'w{i}'."""

    eos_token_id = EOS
    pad_token_id = EOS

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(w[1:]) for w in text.split()]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i == EOS))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in messages) + " w1"


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """A random transformers Llama (GQA) and the same weights loaded by agentrm_jax."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=EOS, pad_token_id=EOS, bos_token_id=1)
    ref = TorchLlama(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(4.0)  # sharper distributions: fewer near-ties in greedy decoding
    path = tmp_path_factory.mktemp("tiny_llama")
    ref.save_pretrained(path)
    return ref, load_model(path)


def _torch_greedy(ref, prompt, max_new):
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                           max_new_tokens=max_new, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
    return tuple(out[0, len(prompt):].tolist())


def test_greedy_matches_transformers_on_a_left_padded_batch(tiny_pair):
    ref, ours = tiny_pair
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 97, size=n).tolist() for n in (3, 17, 40)]  # padded to one bucket
    got = Sampler(ours, IdTokenizer()).generate_ids(prompts, max_new_tokens=24)
    for prompt, row in zip(prompts, got):
        expected = _torch_greedy(ref, prompt, 24)
        assert row[0].token_ids == expected[:len(row[0].token_ids)]
        assert len(row[0].token_ids) == len(expected)


def test_n_samples_share_one_prefill_and_differ(tiny_pair):
    _, ours = tiny_pair
    sampler = Sampler(ours, IdTokenizer())
    out = sampler.generate_ids([[5, 6, 7], [8, 9]], max_new_tokens=12, n=4, temperature=1.0, seed=3)
    assert sampler.stats.prefill_calls == 1
    assert sampler.stats.prefill_rows == 2  # one prefill per prompt, not per sample
    assert sampler.stats.decode_rows == 8
    assert [len(r) for r in out] == [4, 4]
    assert len({c.token_ids for c in out[0]}) > 1  # temperature 1 on a random model: samples differ


def test_n_greedy_samples_equal_single_greedy(tiny_pair):
    _, ours = tiny_pair
    sampler = Sampler(ours, IdTokenizer())
    single = sampler.generate_ids([[5, 6, 7]], max_new_tokens=10)[0][0]
    many = sampler.generate_ids([[5, 6, 7]], max_new_tokens=10, n=3)[0]
    assert all(c.token_ids == single.token_ids for c in many)


def test_sampling_is_deterministic_for_a_seed(tiny_pair):
    _, ours = tiny_pair
    kw = dict(max_new_tokens=10, n=2, temperature=0.8, top_p=0.9, top_k=20)
    a = Sampler(ours, IdTokenizer()).generate_ids([[5, 6, 7]], seed=11, **kw)
    b = Sampler(ours, IdTokenizer()).generate_ids([[5, 6, 7]], seed=11, **kw)
    c = Sampler(ours, IdTokenizer()).generate_ids([[5, 6, 7]], seed=12, **kw)
    assert a == b
    assert a != c


def test_compiles_are_bounded_over_varied_prompts():
    model = init_model(ModelConfig.tiny(vocab_size=101, max_position_embeddings=512), seed=1)
    sampler = Sampler(model, IdTokenizer(), max_batch=4)
    before = compile_counts()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, 101, size=int(n)).tolist() for n in rng.integers(1, 60, size=20)]
    out = sampler.generate_ids(prompts, max_new_tokens=6)
    assert len(out) == 20
    after = compile_counts()
    # prompt lengths 1..59 fall in buckets 16, 32, 64 (batch bucket 4): at most 3 programs each.
    assert after["prefill"] - before["prefill"] <= 3
    assert after["decode"] - before["decode"] <= 3
    again = compile_counts()
    sampler.generate_ids(prompts[::-1], max_new_tokens=6)
    assert compile_counts() == again  # same buckets: nothing new to compile


def test_stop_strings_cut_the_completion(tiny_pair):
    _, ours = tiny_pair
    sampler = Sampler(ours, IdTokenizer())
    free = sampler.generate_ids([[5, 6, 7]], max_new_tokens=20)[0][0]
    words = free.text.split()
    assert len(words) >= 4
    stop = words[2]
    cut = sampler.generate_ids([[5, 6, 7]], max_new_tokens=20, stop=[stop])[0][0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    # decoding stopped early: within one stop-check chunk of where the stop string appeared
    assert len(cut.token_ids) < len(free.token_ids) or len(free.token_ids) <= 16


def test_generate_returns_text_per_prompt_and_renders_chat(tiny_pair):
    _, ours = tiny_pair
    texts = generate(ours, IdTokenizer(), ["w5 w6", [{"role": "user", "content": "w5 w6"}]], max_new_tokens=5)
    assert len(texts) == 2 and all(len(t) == 1 and isinstance(t[0], str) for t in texts)
    # the chat template appends w1, so the two prompts differ
    direct = Sampler(ours, IdTokenizer()).generate_ids([[5, 6, 1]], max_new_tokens=5)[0][0].text
    assert texts[1][0] == direct


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
    (dict(max_new_tokens=4, n=0), "n must be"),
    (dict(max_new_tokens=4, temperature=-1.0), "temperature"),
    (dict(max_new_tokens=4, temperature=1.0, top_p=0.0), "top_p"),
    (dict(max_new_tokens=4, temperature=1.0, top_k=-1), "top_k"),
    (dict(max_new_tokens=600), r"max_new_tokens=600 does not fit the model's context window of 512"),
    (dict(max_new_tokens=511), r"2 tokens \+ max_new_tokens=511 > the model's context window.*at most 510 new"),
])
def test_bad_arguments_raise_clear_errors(tiny_pair, kwargs, match):
    _, ours = tiny_pair
    with pytest.raises(ValueError, match=match):
        Sampler(ours, IdTokenizer()).generate_ids([[5, 6]], **kwargs)


@pytest.mark.parametrize("prompts, match", [
    ([""], "prompt 0 is empty"),
    ([[]], "prompt 0 must be"),
    ([], "prompts is empty"),
    ("w5 w6", "list of prompts"),
])
def test_bad_prompts_raise_clear_errors(tiny_pair, prompts, match):
    _, ours = tiny_pair
    with pytest.raises(ValueError, match=match):
        Sampler(ours, IdTokenizer()).generate(prompts, max_new_tokens=4)


def test_top_k_and_top_p_restrict_the_support():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 256, jnp.float32))
    import jax

    keys = jax.random.split(jax.random.key(0), (64, 256))  # 64 draws of 256 rows, one key per row

    def draws(strategy, top_p):
        return {int(t) for k in keys for t in select_next(logits, k, jnp.float32(1.0), jnp.float32(top_p),
                                                             strategy)}
    assert draws(SamplingStrategy(greedy=False), 1.0) == {0, 1, 2, 3}
    assert draws(SamplingStrategy(greedy=False, top_k=2), 1.0) == {0, 1}
    assert draws(SamplingStrategy(greedy=False, use_top_p=True), 0.7) == {0, 1}
    assert draws(SamplingStrategy(greedy=False, use_top_p=True), 0.4) == {0}
    assert draws(SamplingStrategy(greedy=True), 1.0) == {0}


def test_no_token_prompts_give_no_completions_but_arguments_are_still_checked(tiny_pair):
    _, ours = tiny_pair
    sampler = Sampler(ours, IdTokenizer(), max_batch=3)
    assert sampler.generate_ids([], max_new_tokens=4) == []
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler.generate_ids([], max_new_tokens=0)
