"""A multi-turn conversation as one token sequence with a loss mask exactly on the assistant replies.

    render_chat(messages, tokenizer, targets=[k, ...]) -> ChatSequence

What a reply is, for any chat template: the text the template adds for assistant message k after the
generation prompt of the turns before it, i.e. `apply(messages[:k+1])` minus
`apply(messages[:k], add_generation_prompt=True)`, without trailing whitespace. That is what the
policy must write at play time (the sampler encodes `apply(..., add_generation_prompt=True)` and
generates after it): the content and the template's end-of-turn token (ChatML `<|im_end|>`,
Llama 3 `<|eot_id|>`), which ends decoding. Not the header (`<|im_start|>assistant\\n`, part of the
prompt) and not the newline a template puts between turns.

One sequence per conversation needs a prefix-stable template (rendering later turns leaves the text
of earlier ones as it was: ChatML, Llama 3); then every reply's context in the sequence is exactly
the play-time prompt of that turn. A template that rewrites earlier turns, one that has no assistant
role (raises on it, or drops its content) is a ValueError saying so.

Tokens: the text is tokenized in pieces cut at the reply boundaries, so a reply's tokens are its own
tokenization and the prompt before it ends exactly as the sampler's encoding of that turn's prompt
ends. With a template and tokenizer whose whitespace pre-tokenization depends on what follows
(SmolLM2's BPE under a Llama-3 template: "\n\n" alone is one token, "\n\nX" is "\n", "\n", "X"),
the headers of EARLIER turns can then differ from the sampler's re-encoding of a whole prompt by
such a split; ChatML (the bundled model) matches token for token (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ChatSequence", "render_chat"]


@dataclass(frozen=True)
class ChatSequence:
    """input_ids int32 [T]; loss_mask bool [T] (True on the tokens of the target replies, end-of-turn
    token included); reply_spans: (first, last + 1) token range of each target reply, in order."""

    input_ids: np.ndarray
    loss_mask: np.ndarray
    reply_spans: tuple[tuple[int, int], ...]

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def _apply(tokenizer, messages, *, generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja's TemplateError (raise_exception in the template), or a missing template
        raise ValueError(f"the tokenizer's chat template cannot render this conversation ({e}); SFT needs a "
                         "template with system, user and assistant roles") from None


def render_chat(messages: Sequence[dict[str, str]], tokenizer, *, targets: Sequence[int] | None = None
                ) -> ChatSequence:
    """Tokens of `messages` through the tokenizer's chat template, masked on the replies of the assistant
    messages at indices `targets` (default: every assistant message). See the module docstring."""
    messages = [dict(m) for m in messages]
    if targets is None:
        targets = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    full = _apply(tokenizer, messages, generation_prompt=False)
    char_spans = []
    for k in targets:
        if messages[k].get("role") != "assistant":
            raise ValueError(f"target message {k} has role {messages[k].get('role')!r}, not 'assistant'")
        prompt = _apply(tokenizer, messages[:k], generation_prompt=True)
        turn = _apply(tokenizer, messages[:k + 1], generation_prompt=False)
        content = messages[k]["content"].strip()
        if not turn.startswith(prompt) or not full.startswith(turn):
            raise ValueError("the chat template is not prefix-stable (rendering later turns changes the text of "
                             f"earlier ones at assistant message {k}), so a whole conversation would not show the "
                             "model its play-time prompts; use a template that renders each turn on its own")
        reply = turn[len(prompt):].rstrip()
        if content and content not in reply:
            raise ValueError(f"the chat template has no assistant role: assistant message {k} does not appear in "
                             f"its rendering ({reply[:80]!r}); SFT needs a template that renders assistant turns")
        char_spans.append((len(prompt), len(prompt) + len(reply)))
    # Tokenized piece by piece, cut at the reply boundaries: each reply's tokens are its own
    # tokenization and the text before it ends as the play-time prompt ends (a whole-text tokenization
    # may merge a header's trailing whitespace with the reply's first characters).
    ids: list[int] = []
    mask: list[bool] = []
    spans = []
    cursor = 0
    for lo, hi in char_spans:
        for text, target in ((full[cursor:lo], False), (full[lo:hi], True)):
            if not text:
                continue
            got = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if target:
                spans.append((len(ids), len(ids) + len(got)))
            ids += got
            mask += [target] * len(got)
        cursor = hi
    if cursor < len(full):
        tail = list(tokenizer(full[cursor:], add_special_tokens=False)["input_ids"])
        ids += tail
        mask += [False] * len(tail)
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    return ChatSequence(ids, mask, tuple(spans))
