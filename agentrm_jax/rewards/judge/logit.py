"""The logit judge: P(Yes) / (P(Yes) + P(No)) of an in-process causal LM asked a yes/no question.

One jitted forward pass reads the next-token distribution at the start of
the answer; each side is summed over its spellings ("Yes", " Yes", "yes",
...). No sampling, no parsing.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.models.buckets import next_power_of_two
from agentrm_jax.records import Trajectory
from agentrm_jax.rewards.judge.common import all_prefixes, as_list, split_by_counts
from agentrm_jax.rewards.judge.transcripts import DEFAULT_LOGIT_QUESTION, LOGIT_TEMPLATE, Messages, render_transcript

__all__ = ["NO_WORDS", "YES_WORDS", "LogitJudge", "answer_token_ids", "compile_counts"]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _yes_no_batch(graphdef, state, ids, mask, last_index, yes_ids, no_ids):
    """(P(yes) / (P(yes) + P(no)), P(yes) + P(no)) at each row's last real token; rows right-padded."""
    model = nnx.merge(graphdef, state)
    hidden, _ = model.backbone(ids, mask)
    last = jnp.take_along_axis(hidden, last_index[:, None, None], axis=1)[:, 0]  # [B, D]
    logp = jax.nn.log_softmax(model.logits(last), axis=-1)  # [B, V] float32
    lse_yes = jax.nn.logsumexp(logp[:, yes_ids], axis=-1)
    lse_no = jax.nn.logsumexp(logp[:, no_ids], axis=-1)
    return jax.nn.sigmoid(lse_yes - lse_no), jnp.exp(jnp.logaddexp(lse_yes, lse_no))


def compile_counts() -> dict[str, int]:
    """How many shapes the logit judge's jitted forward has compiled."""
    return {"logit_judge": _yes_no_batch._cache_size()}


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token ids of the single-token spellings among `words` (else the first token of the first word)."""
    ids: list[int] = []
    for w in words:
        enc = tokenizer.encode(w, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(int(enc[0]))
    if not ids:
        enc = tokenizer.encode(words[0], add_special_tokens=False)
        if not enc:
            raise ValueError(f"the tokenizer encodes {words[0]!r} to no tokens")
        ids.append(int(enc[0]))
    return ids


YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES", " YES")
NO_WORDS = ("No", " No", "no", " no", "NO", " NO")


class LogitJudge:
    """P(Yes) / (P(Yes) + P(No)) of an in-process causal LM asked whether the trajectory is on track.

    The trajectory (`render_transcript`) and `question` form one user turn,
    rendered with the chat template and its generation prompt; one forward
    pass reads the next-token distribution at the first answer token. Each
    side sums the probabilities of its single-token spellings (`yes_ids`,
    `no_ids`). `last_answer_mass` holds P(Yes) + P(No) of the last call (how
    much of the distribution the answer tokens got: low = the model wanted to
    say something else).

    Batching as in `rewards.scoring`: sorted by length, batches of at most
    batch_size, padded to power-of-two shapes, right-padded rows, so a score
    does not depend on its batch-mates (1e-5 in float32). Prompts longer than
    max_length tokens drop their oldest steps first.
    """

    kind = "judge"

    def __init__(self, model, tokenizer, *, question: str = DEFAULT_LOGIT_QUESTION, batch_size: int = 8,
                 max_length: int | None = 2048, min_length_bucket: int = 32, max_steps_shown: int | None = None,
                 max_field_chars: int | None = 2000, template: str = LOGIT_TEMPLATE,
                 yes_words: Sequence[str] = YES_WORDS, no_words: Sequence[str] = NO_WORDS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if "{transcript}" not in template:
            raise ValueError("template must contain '{transcript}'")
        self.model, self.tokenizer, self.question = model, tokenizer, question
        self.batch_size, self.max_length, self.min_length_bucket = batch_size, max_length, min_length_bucket
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.yes_ids = answer_token_ids(tokenizer, yes_words)
        self.no_ids = answer_token_ids(tokenizer, no_words)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes and no answers share tokens: {set(self.yes_ids) & set(self.no_ids)}")
        self.last_answer_mass = np.zeros((0,), np.float32)
        self.tokens_scored = 0
        self.truncated = 0

    def messages(self, trajectory: Trajectory, *, first_step: int = 0) -> Messages:
        transcript = render_transcript(trajectory, max_steps_shown=self.max_steps_shown, first_step=first_step,
                                       max_field_chars=self.max_field_chars)
        prompt = self.template.replace("{transcript}", transcript).replace("{question}", self.question)
        return [{"role": "user", "content": prompt}]

    def _encode_once(self, trajectory: Trajectory, first_step: int) -> list[int]:
        text = self.tokenizer.apply_chat_template(self.messages(trajectory, first_step=first_step), tokenize=False,
                                                  add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, trajectory: Trajectory) -> list[int]:
        """Token ids of the judge prompt, ending with the generation prompt (the answer comes next)."""
        ids = self._encode_once(trajectory, 0)
        if self.max_length is None or len(ids) <= self.max_length:
            return ids
        self.truncated += 1
        for first in range(1, len(trajectory.steps) + 1):  # drop the oldest steps until it fits
            ids = self._encode_once(trajectory, first)
            if len(ids) <= self.max_length:
                return ids
        return ids[-self.max_length:]  # the instruction alone is too long: keep the end (the question)

    def _run(self, trajectories: list[Trajectory]) -> np.ndarray:
        n = len(trajectories)
        probs = np.zeros((n,), np.float32)
        mass = np.zeros((n,), np.float32)
        if not n:
            self.last_answer_mass = mass
            return probs
        truncated_before = self.truncated
        encoded = [self.encode(t) for t in trajectories]
        if self.truncated > truncated_before:
            warnings.warn(f"{self.truncated - truncated_before} of {n} judge prompts exceeded max_length="
                          f"{self.max_length} tokens; their oldest steps were left out", stacklevel=3)
        graphdef, state = nnx.split(self.model)
        yes, no = jnp.asarray(self.yes_ids, jnp.int32), jnp.asarray(self.no_ids, jnp.int32)
        order = np.argsort(-np.asarray([len(e) for e in encoded]), kind="stable")
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            rows = min(next_power_of_two(len(idx)), self.batch_size)
            length = next_power_of_two(max(len(encoded[i]) for i in idx), self.min_length_bucket)
            ids = np.zeros((rows, length), np.int32)
            mask = np.zeros((rows, length), bool)
            mask[:, 0] = True  # filler rows hold one token so no row is fully masked
            last = np.zeros((rows,), np.int32)
            for r, i in enumerate(idx):
                ids[r, :len(encoded[i])] = encoded[i]
                mask[r, :len(encoded[i])] = True
                last[r] = len(encoded[i]) - 1
            self.tokens_scored += int(sum(len(encoded[i]) for i in idx))
            p, m = jax.device_get(_yes_no_batch(graphdef, state, jnp.asarray(ids), jnp.asarray(mask),
                                                jnp.asarray(last), yes, no))
            probs[idx] = p[:len(idx)]
            mass[idx] = m[:len(idx)]
        self.last_answer_mass = mass
        return probs

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        """P(Yes) / (P(Yes) + P(No)) per trajectory, float32 in (0, 1)."""
        return self._run(as_list(trajectories))

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        """The score of each prefix steps[:i+1] (all prefixes of all trajectories batched together)."""
        flat, counts = all_prefixes(as_list(trajectories))
        return split_by_counts(self._run(flat), counts)
