"""The logit judge: P(Yes) / (P(Yes) + P(No)) of an in-process causal LM asked a yes/no question.

One jitted forward pass reads the next-token distribution at the start of
the answer; each side is summed over its spellings ("Yes", " Yes", "yes",
...). No sampling, no parsing.

Pure functions (jit/vmap/grad-safe): `yes_probability(logits [B, V], yes_ids [Y],
no_ids [N]) -> (P(yes) / (P(yes) + P(no)) [B], P(yes) + P(no) [B])` on
next-token logits from anywhere, and `judge_yes_probability(model, input_ids,
attention_mask, yes_ids, no_ids)` reading them at each row's last real token.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.records import Trajectory
from agentrm_jax.rewards.explicit import last_token_index
from agentrm_jax.rewards.rendering import RenderedTrajectory
from agentrm_jax.rewards.scoring import BatchedScorer, ScoringConfig
from agentrm_jax.rewards.judge.common import all_prefixes, as_list, split_by_counts
from agentrm_jax.rewards.judge.transcripts import DEFAULT_LOGIT_QUESTION, LOGIT_TEMPLATE, Messages, render_transcript

__all__ = ["NO_WORDS", "YES_WORDS", "LogitJudge", "answer_token_ids", "compile_counts", "judge_yes_probability",
           "yes_probability"]


def yes_probability(logits: jax.Array, yes_ids: jax.Array, no_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Next-token logits [B, V], answer token ids yes [Y] / no [N] -> (P(yes) / (P(yes) + P(no)) [B],
    P(yes) + P(no) [B]), float32; each side sums the probabilities of its ids."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # [B, V]
    lse_yes = jax.nn.logsumexp(logp[:, yes_ids], axis=-1)
    lse_no = jax.nn.logsumexp(logp[:, no_ids], axis=-1)
    return jax.nn.sigmoid(lse_yes - lse_no), jnp.exp(jnp.logaddexp(lse_yes, lse_no))


def judge_yes_probability(model, input_ids: jax.Array, attention_mask: jax.Array, yes_ids: jax.Array,
                          no_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The logit judge on prompt token arrays: `yes_probability` of the next token after each row's last
    real token (left or right padding). model: a `LlamaForCausalLM` (its `backbone` and `logits`);
    input_ids, attention_mask: [B, T] (the prompt ends with the generation prompt). -> ([B], [B]) float32.
    """
    hidden, _ = model.backbone(input_ids, attention_mask)  # [B, T, D]
    last = jnp.maximum(last_token_index(attention_mask), 0)  # [B]
    at_last = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, D]
    return yes_probability(model.logits(at_last), yes_ids, no_ids)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _yes_no_batch(graphdef, state, ids, mask, yes_ids, no_ids):
    return judge_yes_probability(nnx.merge(graphdef, state), ids, mask, yes_ids, no_ids)


def _prompt_row(ids: list[int]) -> RenderedTrajectory:
    """A judge prompt as a `BatchedScorer` row: its tokens, no steps, no agent tokens."""
    none = np.zeros((0,), np.int32)
    return RenderedTrajectory(input_ids=np.asarray(ids, np.int32), agent_mask=np.zeros((len(ids),), bool),
                              step_ends=none, step_starts=none, prefix_ends=none)


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

    Batching is `rewards.scoring.BatchedScorer`'s (`self.scorer`): sorted by
    length, batches of at most batch_size, padded to bucketed shapes
    (`models.buckets.bucket_length`), right-padded rows, so a score does not
    depend on its batch-mates (1e-5 in float32). Prompts longer than
    max_length tokens drop their oldest steps first (`encode`).
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
        self.max_length = max_length
        # the judge fits its prompts to max_length itself (`encode`); the scorer buckets, pads and runs them
        self.scorer = BatchedScorer(tokenizer, ScoringConfig(batch_size=batch_size, max_length=None,
                                                             min_length_bucket=min_length_bucket))
        self.max_steps_shown, self.max_field_chars, self.template = max_steps_shown, max_field_chars, template
        self.yes_ids = answer_token_ids(tokenizer, yes_words)
        self.no_ids = answer_token_ids(tokenizer, no_words)
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes and no answers share tokens: {set(self.yes_ids) & set(self.no_ids)}")
        self.last_answer_mass = np.zeros((0,), np.float32)
        self.truncated = 0

    @property
    def batch_size(self) -> int:
        """Most prompts per forward pass."""
        return self.scorer.config.batch_size

    @property
    def min_length_bucket(self) -> int:
        """The smallest padded prompt length."""
        return self.scorer.config.min_length_bucket

    @property
    def tokens_scored(self) -> int:
        """Real prompt tokens run through the model over the judge's lifetime."""
        return self.scorer.tokens_scored

    def messages(self, trajectory: Trajectory, *, first_step: int = 0) -> Messages:
        """The one user turn the judge gets: the transcript from `first_step` on, then the question."""
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
        graphdef, state = nnx.split(self.model)  # picks up weights changed since construction
        yes, no = jnp.asarray(self.yes_ids, jnp.int32), jnp.asarray(self.no_ids, jnp.int32)

        def batch(arrays):
            return _yes_no_batch(graphdef, state, arrays["input_ids"], arrays["attention_mask"], yes, no)

        for idx, (p, m) in self.scorer.run_batches([_prompt_row(e) for e in encoded], batch):
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
