"""A GGUF file's tokenizer, rebuilt from its own metadata with `gguf` and `tokenizers` (no torch).

A GGUF keeps no `tokenizer.json`: it stores the vocabulary (`tokenizer.ggml.tokens`,
token types), the BPE merges, the special token ids, the chat template and the
name of the pre-tokenizer llama.cpp uses (`tokenizer.ggml.pre`). transformers can
convert that too, but its GGUF reader imports torch, which a user of this library
need not have; so we build the same byte-level BPE ourselves:

    model           BPE(vocab, merges), no unk token, no byte fallback (Llama-3: whole
                    pre-tokens found in the vocabulary skip the merges, as its tokenizer.json says)
    normalizer      NFC for Qwen2's vocabulary (as its tokenizer.json), none otherwise
    pre-tokenizer   the split llama.cpp applies for `tokenizer.ggml.pre`, then the
                    GPT-2 byte-to-unicode mapping (`ByteLevel`)
    decoder         ByteLevel
    added tokens    CONTROL tokens (type 3) as special tokens, USER_DEFINED (4) as
                    plain added tokens, so neither is cut into pieces
    post-processor  BOS / EOS only where the file asks for them (`add_bos_token`)

Only byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`: SmolLM, Qwen2,
Llama-3 and most recent models) are supported; anything else, or a pre-tokenizer
we do not know, is refused by name rather than tokenized differently from the
model's training. Tests compare ids with transformers' conversion on a varied corpus.

The result is saved once under the cache (`gguf_tokenizer`), so later starts skip
parsing the ~100k-entry arrays.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from agentrm_jax.models.gguf_file import ByteSource

# Bumped whenever the conversion changes, so caches made by an older one are rebuilt.
CONVERTER_VERSION = 3
_CACHE_MARKER = "agentrm_source.json"  # written last into the staging folder: its presence = complete copy
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp's token types

# llama.cpp pre-tokenizer names -> how text is split before BPE. "gpt2" is the GPT-2
# regex built into `ByteLevel`; "gpt2+digits" isolates every digit first (StarCoder and
# SmolLM vocabularies hold no multi-digit tokens); the others are explicit regexes.
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_SPLITS: dict[str, str] = {
    "default": "gpt2", "gpt2": "gpt2", "gpt-2": "gpt2",
    "smollm": "gpt2+digits", "starcoder": "gpt2+digits", "refact": "gpt2+digits",
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
    "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
}


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerSpec:
    """Everything a GGUF says about its tokenizer (llama.cpp key names in comments)."""

    model: str  # tokenizer.ggml.model ("gpt2" = byte-level BPE)
    pre: str | None  # tokenizer.ggml.pre
    tokens: tuple[str, ...]  # tokenizer.ggml.tokens, in id order
    token_types: tuple[int, ...]  # tokenizer.ggml.token_type (1 normal, 3 control, 4 user-defined)
    merges: tuple[str, ...]  # tokenizer.ggml.merges, "left right" in priority order
    bos_id: int | None = None  # tokenizer.ggml.bos_token_id
    eos_id: int | None = None  # tokenizer.ggml.eos_token_id
    unk_id: int | None = None  # tokenizer.ggml.unknown_token_id
    pad_id: int | None = None  # tokenizer.ggml.padding_token_id
    add_bos: bool = False  # tokenizer.ggml.add_bos_token
    add_eos: bool = False  # tokenizer.ggml.add_eos_token
    chat_template: str | None = None  # tokenizer.chat_template

    def __post_init__(self):
        if self.token_types and len(self.token_types) != len(self.tokens):
            raise ValueError(f"tokenizer.ggml.token_type has {len(self.token_types)} entries for "
                             f"{len(self.tokens)} tokens")
        for name in ("bos_id", "eos_id", "unk_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < len(self.tokens):
                raise ValueError(f"{name}={value} is outside the vocabulary of {len(self.tokens)} tokens")


def read_tokenizer_spec(reader, source: str = "gguf") -> GGUFTokenizerSpec:
    """The tokenizer fields of a parsed GGUF (`gguf_file.GGUFFile`, or a `gguf.GGUFReader`, whose fields
    are read through `.contents()`); `source` names the file in errors."""
    fields = reader.fields

    def get(key: str, default: Any = None) -> Any:
        if key not in fields:
            return default
        value = fields[key]
        return value.contents() if hasattr(value, "contents") else value

    if "tokenizer.ggml.tokens" not in fields:
        raise ValueError(f"{source}: the file holds no tokenizer (no tokenizer.ggml.tokens); load the model "
                         "with load_model() and pass a tokenizer of your own")
    return GGUFTokenizerSpec(
        model=get("tokenizer.ggml.model"), pre=get("tokenizer.ggml.pre"),
        tokens=tuple(get("tokenizer.ggml.tokens")), token_types=tuple(get("tokenizer.ggml.token_type", ())),
        merges=tuple(get("tokenizer.ggml.merges", ())),
        bos_id=get("tokenizer.ggml.bos_token_id"), eos_id=get("tokenizer.ggml.eos_token_id"),
        unk_id=get("tokenizer.ggml.unknown_token_id"), pad_id=get("tokenizer.ggml.padding_token_id"),
        add_bos=bool(get("tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(get("tokenizer.ggml.add_eos_token", False)),
        chat_template=get("tokenizer.chat_template"))


def _pre_tokenizer(pre: str | None, source: str):
    from tokenizers import Regex, pre_tokenizers

    split = PRE_TOKENIZER_SPLITS.get(pre or "default")
    if split is None:
        raise ValueError(f"{source}: tokenizer.ggml.pre={pre!r} is not a pre-tokenizer agentrm_jax knows "
                         f"(known: {sorted(PRE_TOKENIZER_SPLITS)}); load the model's HF directory, whose "
                         "tokenizer.json says how to split")
    if split == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split == "gpt2+digits":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def build_tokenizer(spec: GGUFTokenizerSpec, source: str = "gguf"):
    """transformers `PreTrainedTokenizerFast` from a spec: byte-level BPE, chat template and special tokens.

    Refuses (ValueError naming the field) vocabularies that are not byte-level BPE and
    unknown pre-tokenizers. The pad token falls back to eos when the file names none.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    if spec.model != "gpt2":
        raise ValueError(f"{source}: tokenizer.ggml.model={spec.model!r} is not supported (agentrm_jax builds "
                         "byte-level BPE tokenizers, model 'gpt2'); load the model's HF directory instead")
    vocab = {token: index for index, token in enumerate(spec.tokens)}
    if len(vocab) != len(spec.tokens):
        raise ValueError(f"{source}: tokenizer.ggml.tokens lists {len(spec.tokens) - len(vocab)} tokens twice")
    merges = []
    for line, merge in enumerate(spec.merges):
        pair = tuple(merge.split(" "))
        if len(pair) != 2:
            raise ValueError(f"{source}: tokenizer.ggml.merges[{line}]={merge!r} is not 'left right'")
        merges.append(pair)
    family = PRE_TOKENIZER_SPLITS.get(spec.pre or "default")
    # Llama-3's BPE looks a whole pre-token up in the vocabulary before merging (`ignore_merges`),
    # and Qwen2's tokenizer NFC-normalises text first (its tokenizer.json says so; a GGUF does not).
    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False,
                                   ignore_merges=family == _LLAMA3_SPLIT))
    if family == _QWEN2_SPLIT:
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = _pre_tokenizer(spec.pre, source)
    backend.decoder = decoders.ByteLevel()
    types = spec.token_types or (1,) * len(spec.tokens)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(spec.tokens, types) if kind == _CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(spec.tokens, types) if kind == _USER_DEFINED])
    token = lambda i: None if i is None else spec.tokens[i]  # noqa: E731
    bos, eos = token(spec.bos_id), token(spec.eos_id)
    if (spec.add_bos and bos is None) or (spec.add_eos and eos is None):
        raise ValueError(f"{source}: add_bos_token/add_eos_token is set but the file names no such token")
    single = ([f"{bos}:0"] if spec.add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if spec.add_eos else [])
    pair = single + [s.replace("A", "B").replace(":0", ":1") for s in single if s.startswith("$")]
    special = [(t, vocab[t]) for t, on in ((bos, spec.add_bos), (eos, spec.add_eos)) if on]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                        unk_token=token(spec.unk_id), pad_token=token(spec.pad_id) or eos,
                                        chat_template=spec.chat_template)
    return tokenizer


# ---------------------------------------------------------------- cache

def default_cache_dir() -> Path:
    """$AGENTRM_CACHE, else ~/.cache/agentrm_jax."""
    return Path(os.environ.get("AGENTRM_CACHE") or Path.home() / ".cache" / "agentrm_jax")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (~0.1 s for the 93 MB bundled file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_cache_path(path, cache_dir: str | os.PathLike | None = None) -> Path:
    """`<cache_dir>/tokenizers/<sha256 of the file (or of a gguf_file.ByteSource's parts in order), first 16
    hex digits>`."""
    digest = path.sha256() if isinstance(path, ByteSource) else file_sha256(path)
    return Path(cache_dir or default_cache_dir()) / "tokenizers" / digest[:16]


def _cache_is_current(target: Path) -> bool:
    try:
        marker = json.loads((target / _CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("converter") == CONVERTER_VERSION


def tokenizer_from_gguf(path):
    """The tokenizer of a GGUF file (or `gguf_file.ByteSource`), built now (a few seconds; `gguf_tokenizer`
    caches it)."""
    from agentrm_jax.models.gguf_io import open_gguf

    file = open_gguf(path)
    return build_tokenizer(read_tokenizer_spec(file, file.source.name), file.source.name)


def _convert_and_store(path, target: Path) -> None:
    """Builds the GGUF's tokenizer and moves a complete copy to `target` atomically."""
    tokenizer = tokenizer_from_gguf(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        name = path.name if isinstance(path, ByteSource) else str(path)
        (staging / _CACHE_MARKER).write_text(json.dumps({"gguf": name, "converter": CONVERTER_VERSION}))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # incomplete or from an older converter; ours replaces it
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race; its copy is as good as ours
            if not _cache_is_current(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gguf_tokenizer(path, cache_dir: str | os.PathLike | None = None):
    """transformers `PreTrainedTokenizerFast` of a GGUF file (a path, or a `gguf_file.ByteSource` over
    split parts), chat template included; no torch needed.

    Building it means parsing the file's tokenizer arrays (a few seconds), so the
    result is saved under `tokenizer_cache_path(path, cache_dir)` (default cache dir:
    $AGENTRM_CACHE or ~/.cache/agentrm_jax) and later calls load that copy (~0.3 s).
    The copy is written to a temporary folder and renamed into place, so a killed
    process never leaves a half-written cache; a copy from an older converter is rebuilt.
    """
    from transformers import PreTrainedTokenizerFast

    if not isinstance(path, ByteSource):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
    target = tokenizer_cache_path(path, cache_dir)
    if not _cache_is_current(target):
        _convert_and_store(path, target)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(target))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
