"""Sampler invariants: token ids end where the kept text ends, a prompt's samples do not depend on the rest
of the call, samples follow weight updates, greedy parity with transformers past the 256-token buckets."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from agentrm_jax.agents.policies import JaxPolicy
from agentrm_jax.models.config import ModelConfig
from agentrm_jax.models.llama import init_model
from agentrm_jax.sampling import Sampler, generate
from agentrm_jax.sampling.sampler import STOP_CHECK_EVERY

EOS = 2


class IdTokenizer:
    """Token i <-> the word 'w{i}' (the stand-in of test_sampler.py)."""

    eos_token_id = EOS
    pad_token_id = EOS

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [int(w[1:]) for w in text.split()]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i == EOS))

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return " ".join(m["content"] for m in messages) + " w1"


@pytest.fixture(scope="module")
def model():
    """A random tiny model: near-uniform next-token distributions, so samples of different streams differ."""
    return init_model(ModelConfig.tiny(vocab_size=101, max_position_embeddings=512), seed=1)


def _free(sampler, prompt, max_new=40):
    """A greedy completion long enough to hold a stop string somewhere inside the first decode chunk."""
    free = sampler.generate_ids([prompt], max_new_tokens=max_new)[0][0]
    assert len(free.token_ids) == max_new and free.finish_reason == "length"
    return free


def _first_new_word(ids, at_least):
    """The first position >= at_least whose word begins no earlier word ("w5" is in "w57"), so a stop
    string ending with that word is first completed there."""
    words = IdTokenizer().decode(ids).split()
    return next(i for i in range(at_least, len(ids)) if not any(w.startswith(words[i]) for w in words[:i]))


# ------------------------------------------------------------------------------------ token ids at a stop


def test_stop_string_keeps_the_ids_up_to_the_token_that_completes_it(model):
    sampler = Sampler(model, IdTokenizer())
    free = _free(sampler, [5, 6, 7])
    i = _first_new_word(free.token_ids, 2)
    assert i < STOP_CHECK_EVERY - 2  # the rest of the chunk was decoded past it
    stop = f"w{free.token_ids[i]}"
    before = sampler.stats.generated_tokens
    cut = sampler.generate_ids([[5, 6, 7]], max_new_tokens=40, stop=[stop])[0][0]
    assert cut.finish_reason == "stop"
    assert cut.token_ids == free.token_ids[:i + 1]  # not the whole 16-token chunk
    assert cut.text == IdTokenizer().decode(free.token_ids[:i]) + " "  # cut before "w<id>"
    assert sampler.stats.generated_tokens - before == i + 1
    assert sampler.stats.discarded_tokens == STOP_CHECK_EVERY - (i + 1)


def test_a_stop_string_spanning_tokens_ends_at_its_last_token(model):
    sampler = Sampler(model, IdTokenizer())
    free = _free(sampler, [8, 9])
    i = _first_new_word(free.token_ids, 3)
    words = IdTokenizer().decode(free.token_ids).split()
    stop = f"{words[i - 1]} {words[i]}"  # completed by token i, begun by token i-1
    cut = sampler.generate_ids([[8, 9]], max_new_tokens=40, stop=["never", stop])[0][0]
    assert cut.token_ids == free.token_ids[:i + 1]
    assert stop not in cut.text and (cut.text + stop).startswith(cut.text)
    assert IdTokenizer().decode(free.token_ids[:i + 1]).startswith(cut.text)


def test_the_first_stop_completed_wins_and_empty_stops_are_ignored(model):
    sampler = Sampler(model, IdTokenizer())
    free = _free(sampler, [5, 6, 7])
    words = IdTokenizer().decode(free.token_ids).split()
    i = _first_new_word(free.token_ids, 4)
    # "long" starts earlier (at word 1) but is completed at word i+1; "short" is completed at word i.
    long, short = " ".join(words[1:i + 2]), words[i]
    cut = sampler.generate_ids([[5, 6, 7]], max_new_tokens=40, stop=[long, short, ""])[0][0]
    assert cut.token_ids == free.token_ids[:i + 1]
    assert cut.text == " ".join(words[:i]) + " "
    # an empty stop string never matches (it used to end every row at the first check)
    whole = sampler.generate_ids([[5, 6, 7]], max_new_tokens=40, stop=[""])[0][0]
    assert whole == free


def test_stop_when_keeps_the_ids_up_to_the_first_token_that_satisfies_it(model):
    sampler = Sampler(model, IdTokenizer(), stop_when=lambda text: len(text.split()) >= 5)
    free = _free(Sampler(model, IdTokenizer()), [5, 6, 7])
    cut = sampler.generate_ids([[5, 6, 7]], max_new_tokens=40)[0][0]
    assert cut.finish_reason == "stop"
    assert cut.token_ids == free.token_ids[:5]
    assert cut.text == IdTokenizer().decode(free.token_ids[:5])


def test_results_do_not_depend_on_the_stop_check_interval(model, monkeypatch):
    import agentrm_jax.sampling.sampler as sampler_module

    kw = dict(max_new_tokens=40, temperature=1.0, n=3, seed=4)
    free = Sampler(model, IdTokenizer()).generate_ids([[5, 6, 7], [11]], **kw)
    stops = [f"w{free[0][0].token_ids[5]}", f"w{free[1][2].token_ids[7]}"]
    every_16 = Sampler(model, IdTokenizer()).generate_ids([[5, 6, 7], [11]], stop=stops, **kw)
    monkeypatch.setattr(sampler_module, "STOP_CHECK_EVERY", 1)
    every_1 = Sampler(model, IdTokenizer()).generate_ids([[5, 6, 7], [11]], stop=stops, **kw)
    assert every_16 == every_1
    assert sum(c.finish_reason == "stop" for row in every_1 for c in row) >= 2


# ------------------------------------------------------------------------------------------------ seeds


def _sample(sampler, prompts, seed=0, n=3):
    return [[c.token_ids for c in row] for row in
            sampler.generate_ids(prompts, max_new_tokens=12, temperature=1.0, n=n, seed=seed)]


def test_a_prompts_samples_do_not_depend_on_the_rest_of_the_call(model):
    rng = np.random.default_rng(0)
    p = [5, 6, 7]
    others = [rng.integers(3, 101, size=int(k)).tolist() for k in (4, 40, 9, 70, 2)]
    alone = _sample(Sampler(model, IdTokenizer()), [p])[0]
    assert len(set(alone)) == 3
    for max_batch in (1, 2, 8):
        sampler = Sampler(model, IdTokenizer(), max_batch=max_batch)
        for at in (0, 3, 5):  # other rows, positions, batches and prompt buckets (16 .. 128)
            prompts = others[:at] + [p] + others[at:]
            assert _sample(sampler, prompts)[at] == alone, (max_batch, at)


def test_seeds_never_collide_across_batches_and_repeats_get_new_samples(model):
    p = [5, 6, 7]
    sampler = Sampler(model, IdTokenizer(), max_batch=1)  # each prompt its own batch
    by_seed = {seed: [row[0] for row in _sample(sampler, [p] * 4, seed=seed, n=1)] for seed in (0, 1)}
    drawn = by_seed[0] + by_seed[1]
    assert len(set(drawn)) == 8  # batch b of seed s is not batch b-1 of seed s+1, repeats differ
    # the k-th repeat of a prompt continues its sample count: [p] * 4 with n=1 is [p] with n=4
    assert by_seed[0] == _sample(sampler, [p], seed=0, n=4)[0]


def test_generate_is_deterministic_and_position_free(model):
    a = generate(model, IdTokenizer(), ["w5 w6", "w9"], max_new_tokens=8, temperature=1.0, seed=3)
    b = generate(model, IdTokenizer(), ["w9", "w5 w6"], max_new_tokens=8, temperature=1.0, seed=3)
    assert a == b[::-1]


# ---------------------------------------------------------------------------------------------- weights


def test_samples_follow_weight_updates_made_after_construction():
    from agentrm_jax.models.lora import LoRAParam, add_lora

    config = ModelConfig.tiny(vocab_size=101, max_position_embeddings=512)
    model, other = init_model(config, seed=1), init_model(config, seed=2)
    sampler = Sampler(model, IdTokenizer())
    policy = JaxPolicy(model, IdTokenizer(), max_new_tokens=8)
    context = [[{"role": "user", "content": "w5 w6"}]]
    kw = dict(max_new_tokens=10, temperature=1.0, n=2, seed=5)

    def both():
        return (sampler.generate_ids([[5, 6, 7]], **kw), policy.sample(context, n=2, temperature=1.0, seed=5))

    def fresh():
        return (Sampler(model, IdTokenizer()).generate_ids([[5, 6, 7]], **kw),
                JaxPolicy(model, IdTokenizer(), max_new_tokens=8).sample(context, n=2, temperature=1.0, seed=5))

    first = both()
    nnx.update(model, nnx.state(other))  # new values in the same Variables (an optimizer step)
    second = both()
    assert second != first and second == fresh()
    # adapters attached and trained after the sampler was made (online LoRA): new Variables in the graph
    add_lora(model, rank=2, alpha=4.0, seed=0)
    for path, var in nnx.to_flat_state(nnx.state(model, LoRAParam)):
        if path[-1].endswith("_lora_b"):
            var.set_value(var.get_value() + 0.5)
    third = both()
    assert third != second and third == fresh()


# ------------------------------------------------------------------------------ parity past 256 tokens


def test_greedy_matches_transformers_on_long_left_padded_prompts(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM as TorchLlama

    from agentrm_jax.models import load_model
    from agentrm_jax.models.buckets import bucket_length

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=EOS, pad_token_id=EOS, bos_token_id=1)
    ref = TorchLlama(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(4.0)  # sharper distributions: fewer near-ties in greedy decoding
    ref.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, 97, size=k).tolist() for k in (300, 553, 21)]
    assert bucket_length(553) == 640  # the quarter-octave bucket: 253 pad slots on the 300-token row
    got = Sampler(ours, IdTokenizer()).generate_ids(prompts, max_new_tokens=24)
    for prompt, row in zip(prompts, got):
        with torch.no_grad():
            out = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                               max_new_tokens=24, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
        assert row[0].token_ids == tuple(out[0, len(prompt):].tolist()), len(prompt)
