"""Builders for the reproduce tests: the tiny config (tests/pipeline/fixtures/reproduce_tiny.yaml) with a
tiny random model over a tiny BPE tokenizer trained on the families' demo text."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "reproduce_tiny.yaml"


def tiny_model_dir(directory: Path) -> Path:
    """A random 2-layer LlamaForCausalLM with a ChatML BPE tokenizer trained on shop and maze demos."""
    sys.path.insert(0, str(HERE.parent / "sft"))
    from sft_helpers import demos, tiny_tokenizer

    sys.path.insert(0, str(HERE.parent / "training"))
    from trainer_helpers import save_tiny_model

    tokenizer = tiny_tokenizer(demos("shop", range(2)) + demos("maze", range(2)), vocab_size=600)
    # 8192 positions: a judge's prompt holds a whole shop trajectory in this small vocabulary
    return save_tiny_model(directory, tokenizer, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                           num_heads=2, num_kv_heads=1, head_dim=16, num_layers=1, max_position_embeddings=8192)


def tiny_config(directory: Path, model: Path, **replace: str) -> Path:
    """The fixture with TINY_MODEL filled in (and any line `key: ...` of `replace` swapped), written to
    directory/reproduce_tiny.yaml."""
    text = FIXTURE.read_text(encoding="utf-8").replace("TINY_MODEL", str(model))
    for key, line in replace.items():
        text = "\n".join(line if row.startswith(f"{key}:") else row for row in text.splitlines()) + "\n"
    path = directory / "reproduce_tiny.yaml"
    path.write_text(text, encoding="utf-8")
    return path
