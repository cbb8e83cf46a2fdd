"""Tokenizers rebuilt from GGUF metadata without torch, checked against the tokenizer a
vocabulary was trained with and against transformers' own GGUF conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import gguf
import numpy as np
import pytest
import unicodedata

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from agentrm_jax.models import gguf_tokenizer as gt
from agentrm_jax.models.bundled import bundled_model_path
from agentrm_jax.models.gguf_tokenizer import gguf_tokenizer, read_tokenizer_spec

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Code, unicode, whitespace runs, digits, contractions, CRLF and chat turns: where splits differ.
CORPUS = [
    "def move(self, direction: str) -> bool:\n    if direction in ('north', 'east'):\n        return True\n",
    "for (int i = 0; i < 10; ++i) { x[i] += 2 * i; }\t// done",
    "naïve café — Straße, 日本語のテキスト, привет мир, مرحبا 😀👍🏽",
    "    four leading spaces,   three inside,\t\ttabs, trailing   ",
    "line one\r\nline two\n\n\nline five\r\n",
    "Numbers: 7, 42, 1234567, 3.14159, -0.5e10, 2026-12-01, $19.99 and 100%.",
    "I'm sure they'll say it's theirs; WE'VE seen 'em, DON'T you think?",
    "<|im_start|>user\nGo to the red ball.<|im_end|>\n<|im_start|>assistant\nThought: east.<|im_end|>\n",
    "Action: click[Buy Now]  Observation: You bought B07XYZ for $24.50!!!",
    "\u3000full-width space, zero\u200bwidth, combining e\u0301, ＡＢＣ１２３",
]
TRAINING_TEXT = CORPUS * 3 + [
    "The agent walks north, then east, then picks up the key and opens the door. " * 4,
    "search[red cotton shirt under 30 dollars] click[item 3] click[size M] click[buy now]",
    "You are in a kitchen. There is a fridge, a counter and a stove. Put the apple in the fridge.",
]
# How each llama.cpp pre-tokenizer name splits text in the tokenizer a vocabulary is trained with.
SPLITS = {
    "qwen2": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(gt.PRE_TOKENIZER_SPLITS["qwen2"]), "isolated"),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
    "llama-bpe": pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(gt.PRE_TOKENIZER_SPLITS["llama-bpe"]), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
    "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
}


def train_reference(pre: str, vocab_size: int = 700) -> Tokenizer:
    """A byte-level BPE trained here with `pre`'s split: the tokenizer a GGUF of it describes, with what
    the real models' tokenizer.json adds (Qwen2: NFC; Llama-3: whole pre-tokens before merges)."""
    tok = Tokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    if pre == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = SPLITS[pre]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    return tok


def write_tokenizer_gguf(path, reference: Tokenizer, *, pre: str, arch: str = "qwen2", model: str = "gpt2",
                         add_bos: bool = False, user_defined=()):
    """A GGUF holding `reference` the way llama.cpp's converter stores a tokenizer (plus one tensor)."""
    spec = json.loads(reference.to_str())["model"]
    tokens = sorted(spec["vocab"], key=spec["vocab"].get)
    tokens += list(user_defined)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    types = [3 if t in SPECIALS else 4 if t in user_defined else 1 for t in tokens]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(add_bos)
    writer.add_chat_template(CHATML)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("pre", list(SPLITS))
def test_rebuilt_tokenizer_equals_the_trained_one(tmp_path, pre):
    reference = train_reference(pre)
    path = write_tokenizer_gguf(tmp_path / "t.gguf", reference, pre=pre)
    ours = gguf_tokenizer(path, cache_dir=tmp_path / "cache")
    for text in CORPUS:
        expected = reference.encode(text).ids
        assert ours(text)["input_ids"] == expected, text
        assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=False)
    assert (ours.eos_token, ours.pad_token, ours.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    chat = [{"role": "user", "content": CORPUS[0]}]
    text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert ours(text)["input_ids"][0] == reference.token_to_id("<|im_start|>")  # whole, not cut in pieces


def test_the_split_matters(tmp_path):
    """Guards the test above: a Qwen2 vocabulary read with GPT-2's split tokenizes differently."""
    reference = train_reference("qwen2")
    path = write_tokenizer_gguf(tmp_path / "t.gguf", reference, pre="gpt2")
    wrong = gguf_tokenizer(path, cache_dir=tmp_path / "cache")
    assert any(wrong(t)["input_ids"] != reference.encode(t).ids for t in CORPUS)


def test_control_user_defined_and_bos_tokens(tmp_path):
    reference = train_reference("qwen2")
    path = write_tokenizer_gguf(tmp_path / "t.gguf", reference, pre="qwen2", add_bos=True, user_defined=["<think>"])
    ours = gguf_tokenizer(path, cache_dir=tmp_path / "cache")
    ids = ours("a<think>b<|im_end|>")["input_ids"]
    think, bos, eos = (ours.convert_tokens_to_ids(t) for t in ("<think>", "<|im_start|>", "<|im_end|>"))
    assert ids[0] == bos and think in ids and eos in ids  # BOS added as asked; both kept whole
    assert "<think>" not in ours.all_special_tokens and "<|im_end|>" in ours.all_special_tokens
    assert ours.decode(ids, skip_special_tokens=True) == "a<think>b"


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe"])
def test_equals_transformers_conversion_of_the_same_file(tmp_path, pre):
    import torch  # noqa: F401  transformers' GGUF reader needs it: the oracle, not our code path
    from transformers import AutoTokenizer

    path = write_tokenizer_gguf(tmp_path / "t.gguf", train_reference(pre), pre=pre)
    ours = gguf_tokenizer(path, cache_dir=tmp_path / "cache")
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="t.gguf")
    differ = [text for text in CORPUS if ours(text)["input_ids"] != theirs(text)["input_ids"]]
    # transformers' conversion leaves out Qwen2's NFC normaliser: only text that NFC changes may differ
    allowed = [t for t in CORPUS if unicodedata.normalize("NFC", t) != t] if pre == "qwen2" else []
    assert set(differ) <= set(allowed), differ


def test_qwen2_normalises_to_nfc_and_llama3_looks_whole_words_up_first(tmp_path):
    qwen = gguf_tokenizer(write_tokenizer_gguf(tmp_path / "q.gguf", train_reference("qwen2"), pre="qwen2"),
                          cache_dir=tmp_path / "cache")
    assert qwen("cafe\u0301")["input_ids"] == qwen("caf\u00e9")["input_ids"]
    plain = gguf_tokenizer(write_tokenizer_gguf(tmp_path / "g.gguf", train_reference("gpt2"), pre="gpt2"),
                           cache_dir=tmp_path / "cache")
    assert plain("cafe\u0301")["input_ids"] != plain("caf\u00e9")["input_ids"]
    # a vocabulary holding "abc" whose merges alone would stop at "ab" + "c"
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    reference = Tokenizer(models.BPE({t: i for i, t in enumerate(SPECIALS + alphabet + ["ab", "abc"])},
                                     [("a", "b")]))
    ids = {}
    for pre in ("llama-bpe", "gpt2"):
        tok = gguf_tokenizer(write_tokenizer_gguf(tmp_path / f"{pre}.gguf", reference, pre=pre),
                             cache_dir=tmp_path / "cache")
        ids[pre] = tok.convert_ids_to_tokens(tok("abc")["input_ids"])
    assert ids == {"llama-bpe": ["abc"], "gpt2": ["ab", "c"]}


def test_unsupported_tokenizers_are_refused_by_name(tmp_path):
    reference = train_reference("gpt2")
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.pre='mystery'.*HF directory"):
        gguf_tokenizer(write_tokenizer_gguf(tmp_path / "a.gguf", reference, pre="mystery"), cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.model='llama'.*not supported"):
        gguf_tokenizer(write_tokenizer_gguf(tmp_path / "b.gguf", reference, pre="default", model="llama"),
                       cache_dir=tmp_path)
    writer = gguf.GGUFWriter(str(tmp_path / "c.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    with pytest.raises(ValueError, match=r"c\.gguf: the file holds no tokenizer"):
        gguf_tokenizer(tmp_path / "c.gguf", cache_dir=tmp_path)


# ---------------------------------------------------------------- cache

class _FakeTokenizer:
    """Stands in for a built tokenizer so the cache mechanics run in milliseconds."""

    fail_on_save = False

    def save_pretrained(self, folder):
        if self.fail_on_save:
            raise KeyboardInterrupt("killed while saving")
        with open(f"{folder}/tokenizer_config.json", "w") as f:
            json.dump({}, f)


def test_tokenizer_cache_is_atomic_reused_and_versioned(tmp_path, monkeypatch):
    import transformers

    built, loaded = [], []

    class Loaded:
        pad_token_id = 2

    monkeypatch.setattr(gt, "tokenizer_from_gguf", lambda path: built.append(path) or _FakeTokenizer())
    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "from_pretrained",
                        lambda folder: loaded.append(folder) or Loaded())
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF not really")
    cache = tmp_path / "cache"
    target = gt.tokenizer_cache_path(model, cache)
    assert target.parent == cache / "tokenizers" and len(target.name) == 16

    monkeypatch.setattr(_FakeTokenizer, "fail_on_save", True)  # a process killed mid-save leaves nothing
    with pytest.raises(KeyboardInterrupt):
        gguf_tokenizer(model, cache_dir=cache)
    assert not target.exists() and not list((cache / "tokenizers").iterdir())

    monkeypatch.setattr(_FakeTokenizer, "fail_on_save", False)
    target.mkdir(parents=True)  # an incomplete copy (no marker) is replaced
    gguf_tokenizer(model, cache_dir=cache)
    gguf_tokenizer(model, cache_dir=cache)
    assert len(built) == 2 and loaded == [str(target)] * 2  # built again after the crash, then cached
    assert [p.name for p in target.parent.iterdir()] == [target.name]

    # a copy made by an older converter (transformers' conversion, no "converter" field) is rebuilt
    (target / "agentrm_source.json").write_text(json.dumps({"gguf": str(model), "transformers": "5.24.0"}))
    gguf_tokenizer(model, cache_dir=cache)
    assert len(built) == 3 and json.loads((target / "agentrm_source.json").read_text())["converter"] == \
        gt.CONVERTER_VERSION
    monkeypatch.setenv("AGENTRM_CACHE", str(tmp_path / "env"))
    assert gt.tokenizer_cache_path(model).parent == tmp_path / "env" / "tokenizers"


# ---------------------------------------------------------------- the bundled file

@pytest.mark.real_model
def test_bundled_tokenizer_equals_transformers_conversion(tmp_path):
    import time

    import torch  # noqa: F401  the oracle's GGUF reader needs it
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = bundled_model_path()
    t0 = time.perf_counter()
    first = gguf_tokenizer(path, cache_dir=tmp_path)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = gguf_tokenizer(path, cache_dir=tmp_path)
    warm = time.perf_counter() - t0
    assert warm < 3.0, (cold, warm)  # the conversion is not repeated
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert isinstance(ours, PreTrainedTokenizerFast)
    assert ours.chat_template == read_tokenizer_spec(gguf.GGUFReader(str(path))).chat_template
    for text in CORPUS:
        ids = ours(text)["input_ids"]
        assert ids == theirs(text)["input_ids"] == first(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids)
    chat = [{"role": "user", "content": "Stack the red block on the blue one.  Then say «done» 😀\n\tok?"}]
    text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    # SmolLM2's template adds its default system prompt when the chat has none
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = ours(text)["input_ids"]
    assert ids == theirs(text)["input_ids"] and ids[0] == 1  # <|im_start|>, no extra BOS
    assert list(ours.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]) == ids
    assert ours.decode(ids) == text
    assert (ours.eos_token, ours.eos_token_id, ours.pad_token_id, ours.bos_token_id) == ("<|im_end|>", 2, 2, 1)
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)


@pytest.mark.real_model
def test_bundled_model_and_tokenizer_load_without_torch(tmp_path):
    """The fresh-machine bug: nothing on the load path may import torch (here it looks uninstalled)."""
    script = textwrap.dedent("""
        import sys

        sys.modules["torch"] = None  # find_spec("torch") -> None and `import torch` fails, as without torch
        from agentrm_jax.models import bundled_model_path, from_pretrained
        model, tokenizer = from_pretrained(bundled_model_path())
        ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
        assert sys.modules["torch"] is None
        print("ok", len(ids), model.config.num_layers)
    """)
    env = dict(os.environ, AGENTRM_CACHE=str(tmp_path), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok ")
