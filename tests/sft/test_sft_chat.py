"""The SFT sequence: loss mask exactly on the assistant replies (token by token, ChatML and a Llama-3-style
template), each reply's context equal to the play-time prompt, and bad inputs named."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from agentrm_jax.agents.collect import expert_episode
from agentrm_jax.agents.factory import make_env
from agentrm_jax.agents.prompts import build_messages
from agentrm_jax.records import RecordError, format_step
from agentrm_jax.sft.chat import render_chat
from agentrm_jax.sft.data import load_sft_examples, sft_messages, sft_row
from agentrm_jax.training.sections import DataConfig

CHAT = [
    {"role": "system", "content": "You act in a maze."},
    {"role": "user", "content": "Example: you are at (0, 0)."},
    {"role": "assistant", "content": "Thought: an example.\nAction: move east"},  # not a target
    {"role": "user", "content": "You are at (1, 0). East: the goal."},
    {"role": "assistant", "content": "  Thought: The goal is east.\nAction: move east \n"},  # padded: Llama 3 trims
    {"role": "user", "content": "You bump into a wall."},
    {"role": "assistant", "content": "Thought: Try south.\nAction: move south"},
]
TARGETS = [4, 6]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _expected(tokenizer, pieces) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask built piece by piece: (text, is_target) pairs tokenized on their own."""
    ids, mask = [], []
    for text, target in pieces:
        got = _ids(tokenizer, text)
        ids += got
        mask += [target] * len(got)
    return np.asarray(ids, np.int32), np.asarray(mask, bool)


def test_chatml_mask_token_by_token(bundled_tokenizer):
    chat = [{**m, "content": m["content"].strip()} for m in CHAT]  # ChatML keeps content as is
    pieces = []
    for i, m in enumerate(chat):
        target = i in TARGETS
        pieces += [("<|im_start|>", False), (m["role"], False), ("\n", False), (m["content"], target),
                   ("<|im_end|>", target), ("\n", False)]
    ids, mask = _expected(bundled_tokenizer, pieces)
    seq = render_chat(chat, bundled_tokenizer, targets=TARGETS)
    np.testing.assert_array_equal(seq.input_ids, ids)
    np.testing.assert_array_equal(seq.loss_mask, mask)
    eos = bundled_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [int(seq.input_ids[end - 1]) for _, end in seq.reply_spans] == [eos, eos]
    padded = render_chat(CHAT, bundled_tokenizer, targets=TARGETS)  # content as is: leading spaces are the reply's
    start, end = padded.reply_spans[0]
    assert bundled_tokenizer.decode(padded.input_ids[start:end]) == CHAT[4]["content"] + "<|im_end|>"


def test_llama3_style_mask_token_by_token(llama3_style_tokenizer):
    tok = llama3_style_tokenizer
    pieces = [("<|begin_of_text|>", False)]
    for i, m in enumerate(CHAT):
        target = i in TARGETS
        pieces += [("<|start_header_id|>", False), (m["role"], False), ("<|end_header_id|>", False)]
        # before a reply the header is cut from it, and "\n\n" alone is one token; before other content
        # "\n\nX" pre-tokenizes as "\n", "\n", "X"
        pieces += [("\n\n", False)] if target else [("\n", False), ("\n", False)]
        pieces += [(m["content"].strip(), target), ("<|eot_id|>", target)]
    ids, mask = _expected(tok, pieces)
    seq = render_chat(CHAT, tok, targets=TARGETS)
    np.testing.assert_array_equal(seq.input_ids, ids)
    np.testing.assert_array_equal(seq.loss_mask, mask)
    assert tok.decode(seq.input_ids[seq.reply_spans[0][0]:seq.reply_spans[0][1]]) == \
        "Thought: The goal is east.\nAction: move east<|eot_id|>"


@pytest.mark.parametrize("tokenizer_fixture", ["bundled_tokenizer", "llama3_style_tokenizer"])
def test_each_reply_follows_its_play_time_prompt(request, tokenizer_fixture):
    tok = request.getfixturevalue(tokenizer_fixture)
    demo = expert_episode(make_env("maze", split="train"), 2, noise=0.4, rng_seed=3, probe=make_env("maze"))
    noisy = demo.meta["noisy_steps"]
    assert noisy
    row = sft_row(demo, tok)
    messages, targets = sft_messages(demo)
    seq = render_chat(messages, tok, targets=targets)
    kept = [k for k in range(len(demo.steps)) if k not in noisy]
    assert len(seq.reply_spans) == len(kept)
    np.testing.assert_array_equal(row["agent_mask"], seq.loss_mask[:seq.reply_spans[-1][1]])
    chatml = tokenizer_fixture == "bundled_tokenizer"
    for k, (start, end) in zip(kept, seq.reply_spans):
        prompt = tok.apply_chat_template(build_messages(demo.prefix(k)), tokenize=False, add_generation_prompt=True)
        played = _ids(tok, prompt)  # what JaxPolicy's sampler encodes at turn k
        if chatml:
            assert list(seq.input_ids[:start]) == played
        else:  # the turn's own header ends as played; earlier headers may split "\n\n" (chat.py docstring)
            header = _ids(tok, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
            assert list(seq.input_ids[start - len(header):start]) == played[-len(header):] == header
        step = demo.steps[k]
        assert tok.decode(seq.input_ids[start:end - 1]) == format_step(step.thought, step.action)


def _template_tokenizer(template):
    from agentrm_jax.models import bundled_model_path, load_tokenizer

    tok = load_tokenizer(bundled_model_path())
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template, message", [
    ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ raise_exception('no assistant role') }}"
     "{% endif %}{{ m['content'] }}{% endfor %}", "cannot render this conversation"),
    ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
     "{% endif %}{% endfor %}", "has no assistant role"),
    ("{{ messages | length }}{% for m in messages %}{{ m['role'] + m['content'] }}{% endfor %}", "not prefix-stable"),
])
def test_templates_that_cannot_be_trained_on_are_named(template, message):
    with pytest.raises(ValueError, match=message):
        render_chat(CHAT, _template_tokenizer(template), targets=TARGETS)


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_bad_demos_are_named_file_line(tmp_path, bundled_tokenizer):
    config = DataConfig(kind="explicit", train="x", max_length=4096)
    good = expert_episode(make_env("maze"), 0).to_dict()
    path = _write(tmp_path / "d.jsonl", [good, {**good, "steps": []}])
    with pytest.raises(RecordError, match=r"d.jsonl:2: trajectory has no steps"):
        load_sft_examples(path, config, bundled_tokenizer)
    path = _write(tmp_path / "d.jsonl", [good, good, {**good, "task": "mazee"}])
    with pytest.raises(RecordError, match=r"d.jsonl:3: unknown environment 'mazee'"):
        load_sft_examples(path, config, bundled_tokenizer)
    with pytest.raises(ValueError, match=r"sft.tasks names unknown environments \['shopp'\]"):
        load_sft_examples(_write(tmp_path / "d.jsonl", [good]), config, bundled_tokenizer, tasks=["shopp"])


def test_over_long_demos_are_cut_after_a_whole_step_and_counted(tmp_path, bundled_tokenizer):
    demos = [expert_episode(make_env("maze"), s) for s in range(3)]
    full = [sft_row(d, bundled_tokenizer) for d in demos]
    lengths = sorted(r["input_ids"].shape[0] for r in full)
    limit = lengths[1] - 1  # the two longer demos do not fit
    path = _write(tmp_path / "d.jsonl", [d.to_dict() for d in demos])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = load_sft_examples(path, DataConfig(kind="explicit", train="x", max_length=limit), bundled_tokenizer)
    assert any("2 demos exceeded max_length" in str(w.message) and "2 were cut" in str(w.message) for w in caught)
    eos = bundled_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, whole in zip(rows, full):
        n = row["input_ids"].shape[0]
        assert n <= limit and bool(row["truncated"]) == (n < whole["input_ids"].shape[0])
        np.testing.assert_array_equal(row["input_ids"], whole["input_ids"][:n])  # a prefix of the whole demo
        np.testing.assert_array_equal(row["agent_mask"], whole["agent_mask"][:n])
        assert int(row["input_ids"][-1]) == eos and row["agent_mask"][-1]  # ends with a whole reply
    with pytest.warns(UserWarning, match="1 left out"):
        with pytest.raises(ValueError, match="no demo to train on"):
            load_sft_examples(_write(tmp_path / "e.jsonl", [demos[0].to_dict()]),
                              DataConfig(kind="explicit", train="x", max_length=64), bundled_tokenizer)
