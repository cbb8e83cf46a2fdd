"""One batched, jit-compiled scorer for every model-based reward model, and the RM interface.

Every reward model answers

    score(trajectories) -> float32 [N]             one scalar per trajectory
    score_steps(trajectories) -> list of [S_i]     one scalar per step (NaN: step cut by max_length)

What a step score is depends on the kind: an explicit RM reads step i at
`prefix_ends[i]`, the last token of the rendering of the first i + 1 steps
(after step i's observation), which is where the score of `t.prefix(i + 1)`
scored as a whole trajectory is read and where training reads its targets
(`training.data`): step scores equal prefix scores, and the last step's score
equals the trajectory's. An implicit PRM sums its token rewards over step i's
own tokens (`step_starts[i]..step_ends[i]`).

`BatchedScorer` renders trajectories (`rewards.rendering.render_for_rm`), sorts
them by length, cuts them into batches, pads each batch to a bucketed shape
(batch: a power of two up to batch_size; length: `models.buckets.bucket_length`,
powers of two >= 32 then quarter octaves above 256; steps: a power of two), runs one jitted function per shape and puts the results back
in input order. Rows are right-padded and every row attends only to its own
real tokens, so a trajectory's score does not depend on its batch-mates, its
padding or its bucket (tests hold this to 1e-5 in float32). Compilations are
bounded by (#batch buckets x #length buckets x #step buckets).

The host boundary is explicit: `render_padded` (records -> one padded,
bucketed batch of numpy arrays) and `padded_batches` (rendered rows -> sorted,
bucketed batches) are all the host side there is; the device side is the pure
functions of `rewards.functional`, and `unpad` puts results back per
trajectory. `score()` is exactly render -> jitted pure function -> unpad, so
users with token arrays of their own skip the host side.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agentrm_jax.records import Trajectory
from agentrm_jax.rewards.rendering import RenderedTrajectory, render_batch_for_rm
from agentrm_jax.models.buckets import bucket_length, next_power_of_two
from agentrm_jax.models.llama import LlamaForCausalLM
from agentrm_jax.rewards.explicit import LOSSES
from agentrm_jax.rewards.functional import explicit_batch_scores, implicit_batch_scores
from agentrm_jax.rewards.heads import ValueModel
from agentrm_jax.rewards.implicit import AGGREGATIONS

__all__ = ["BatchedScorer", "ExplicitRM", "ImplicitPRM", "RewardModel", "ScoringConfig", "bucket_shape",
           "compile_counts", "pad_batch", "padded_batches", "plan_batches", "render_padded", "unpad"]


@runtime_checkable
class RewardModel(Protocol):
    """What search and evaluation need of a reward model."""

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray: ...

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """How trajectories are batched for scoring.

    batch_size: most trajectories per forward pass.
    max_length: token budget per trajectory; longer ones keep the instruction
      and their most recent steps, or only their last max_length tokens when
      the instruction and the last step alone do not fit (see `render_for_rm`),
      with a warning. None = no limit.
    min_length_bucket: the smallest padded length (lengths are bucketed by
            `models.buckets.bucket_length`: powers of two, quarter octaves above 256).
    progress: show a progress bar over batches.
    """

    batch_size: int = 8
    max_length: int | None = 2048
    min_length_bucket: int = 32
    progress: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"ScoringConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"ScoringConfig.max_length must be >= 8 tokens, got {self.max_length}")
        if self.min_length_bucket < 1:
            raise ValueError(f"ScoringConfig.min_length_bucket must be >= 1, got {self.min_length_bucket}")


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices of each batch: longest first (stable), chunks of at most batch_size."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(rendered: Sequence[RenderedTrajectory], *, batch: int, length: int, steps: int
              ) -> dict[str, np.ndarray]:
    """Right-padded host arrays for one batch (the padding contract of `rewards.functional`).

    input_ids (int32), attention_mask, agent_mask (bool): [batch, length];
    positions (int32 [batch, length]): each token's index among its row's real
    tokens, the mask's cumulative sum minus one (0 at padding), which is what
    the models compute from the mask themselves; step_starts, step_ends,
    prefix_ends (int32): [batch, steps] (-1 = none); last_index (int32): [batch].
    Filler rows hold one real token so no row is fully masked.
    """
    ids = np.zeros((batch, length), np.int32)
    mask = np.zeros((batch, length), bool)
    agent = np.zeros((batch, length), bool)
    starts = np.full((batch, steps), -1, np.int32)
    ends = np.full((batch, steps), -1, np.int32)
    prefix_ends = np.full((batch, steps), -1, np.int32)
    last = np.zeros((batch,), np.int32)
    mask[:, 0] = True
    for row, r in enumerate(rendered):
        n, s = r.length, r.step_ends.shape[0]
        ids[row, :n] = r.input_ids
        mask[row, :n] = True
        agent[row, :n] = r.agent_mask
        starts[row, :s] = r.step_starts
        ends[row, :s] = r.step_ends
        prefix_ends[row, :s] = r.prefix_ends
        last[row] = n - 1
    positions = np.maximum(np.cumsum(mask, axis=-1, dtype=np.int32) - 1, 0).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask, "positions": positions, "agent_mask": agent,
            "step_starts": starts, "step_ends": ends, "prefix_ends": prefix_ends, "last_index": last}


def bucket_shape(rendered: Sequence[RenderedTrajectory], *, min_length_bucket: int = 32,
                 max_batch: int | None = None) -> dict[str, int]:
    """The padded shape of a batch of rows: batch a power of two (at most max_batch), length
    `models.buckets.bucket_length` of the longest row, steps a power of two (>= 1)."""
    batch = next_power_of_two(len(rendered))
    return dict(batch=batch if max_batch is None else min(batch, max_batch),
                length=bucket_length(max(r.length for r in rendered), min_length_bucket),
                steps=next_power_of_two(max(r.step_ends.shape[0] for r in rendered)))


def padded_batches(rendered: Sequence[RenderedTrajectory], config: ScoringConfig = ScoringConfig()
                   ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Rendered rows -> (indices into `rendered`, `pad_batch` numpy arrays) per batch: longest first,
    at most config.batch_size rows, shapes bucketed by `bucket_shape`. Host side only."""
    for idx in plan_batches([r.length for r in rendered], config.batch_size):
        group = [rendered[i] for i in idx]
        yield idx, pad_batch(group, **bucket_shape(group, min_length_bucket=config.min_length_bucket,
                                                   max_batch=config.batch_size))


def render_padded(trajectories: Sequence[Trajectory], tokenizer, config: ScoringConfig = ScoringConfig()
                  ) -> tuple[dict[str, np.ndarray], list[RenderedTrajectory]]:
    """The host boundary in one call: trajectories -> (one padded, bucketed batch of numpy arrays, the rows).

    Every trajectory is one row, in input order (config.batch_size does not apply; the batch is
    padded to a power of two with filler rows); arrays as in `pad_batch`, ready for the functions
    of `rewards.functional`. Results go back per trajectory with `unpad`.
    """
    if isinstance(trajectories, Trajectory):
        raise TypeError("pass a list of trajectories (got a single Trajectory)")
    rendered = render_batch_for_rm(list(trajectories), tokenizer, max_length=config.max_length)
    if not rendered:
        raise ValueError("render_padded needs at least one trajectory")
    return pad_batch(rendered, **bucket_shape(rendered, min_length_bucket=config.min_length_bucket)), rendered


def unpad(rendered: Sequence[RenderedTrajectory], scores, step_scores, *, steps_at: str = "step_ends"
          ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Batch outputs -> per trajectory: scores [B] -> float32 [N], step scores [B, S] -> [S_i] each.

    Rows past len(rendered) are filler and dropped; a step is NaN where its `steps_at` index
    ("step_ends" for an implicit PRM, "prefix_ends" for an explicit RM) is -1 (cut by max_length).
    """
    scores = np.asarray(scores, np.float32)[:len(rendered)].copy()
    step_scores = np.asarray(step_scores, np.float32)
    per_step = []
    for row, r in enumerate(rendered):
        steps = step_scores[row, :r.step_ends.shape[0]].copy()
        steps[getattr(r, steps_at) < 0] = np.nan
        per_step.append(steps)
    return scores, per_step


class BatchedScorer:
    """Renders, sorts, buckets, pads and runs a jitted `fn(arrays) -> (scores [B], step_scores [B, S])`.

    `fn` receives the dict of `pad_batch` as device arrays and must be
    row-independent. Results come back in input order as float32 numpy; a
    step is NaN where its `steps_at` index (a `RenderedTrajectory` field) is -1.
    `run_batches` does the bucketing, padding and running alone, for rows
    rendered elsewhere and any per-row outputs (the logit judge's prompts).
    """

    def __init__(self, tokenizer, config: ScoringConfig = ScoringConfig()):
        self.tokenizer = tokenizer
        self.config = config
        self.tokens_scored = 0  # real tokens, for cost accounting
        self.tokens_padded = 0  # tokens computed including padding

    def render(self, trajectories: Sequence[Trajectory]) -> list[RenderedTrajectory]:
        return render_batch_for_rm(trajectories, self.tokenizer, max_length=self.config.max_length)

    def run(self, trajectories: Sequence[Trajectory], fn: Callable[[dict], tuple[jax.Array, jax.Array]], *,
            steps_at: str = "step_ends") -> tuple[np.ndarray, list[np.ndarray]]:
        if isinstance(trajectories, Trajectory):
            raise TypeError("pass a list of trajectories (got a single Trajectory)")
        trajectories = list(trajectories)
        scores = np.zeros((len(trajectories),), np.float32)
        per_step: list[np.ndarray] = [np.zeros((0,), np.float32)] * len(trajectories)
        if not trajectories:
            return scores, per_step
        rendered = self.render(trajectories)
        for idx, (batch_scores, batch_steps) in self.run_batches(rendered, fn):
            got, got_steps = unpad([rendered[i] for i in idx], batch_scores, batch_steps, steps_at=steps_at)
            scores[idx] = got
            for i, steps in zip(idx, got_steps):
                per_step[i] = steps
        return scores, per_step

    def run_batches(self, rendered: Sequence[RenderedTrajectory], fn: Callable[[dict], Any]
                    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Sorts already-rendered rows by length, batches, pads and runs `fn` on each batch (see `run`).

        Yields, batch by batch, the indices into `rendered` of its rows and
        fn's outputs fetched to the host; output rows past len(indices) are
        filler. `run` reads (scores [B], step_scores [B, S]) from them; other
        callers (the logit judge) may return any per-row arrays.
        """
        batches = padded_batches(rendered, self.config)
        if self.config.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch",
                           total=math.ceil(len(rendered) / self.config.batch_size))
        for idx, arrays in batches:
            self.tokens_scored += sum(rendered[i].length for i in idx)
            self.tokens_padded += arrays["input_ids"].size
            yield idx, jax.device_get(fn({k: jnp.asarray(v) for k, v in arrays.items()}))


# --------------------------------------------------------------------------------------- explicit


@functools.partial(jax.jit, static_argnames=("graphdef", "loss"))
def _explicit_batch(graphdef, state, arrays, loss: str):
    return explicit_batch_scores(nnx.merge(graphdef, state), arrays, loss=loss)


class ExplicitRM:
    """A value head on a backbone: a trajectory's score is the head at its last token, step i's score the head
    at `prefix_ends[i]` (after step i's observation), so it equals the score of the prefix `t.prefix(i + 1)`.

    loss: what the head was trained with, "mse" (scores are the raw output)
      or "bce" (scores are sigmoid(output)).
    """

    kind = "explicit"

    def __init__(self, model: ValueModel, tokenizer, *, loss: str = "mse",
                 config: ScoringConfig = ScoringConfig()):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.model, self.loss = model, loss
        self.scorer = BatchedScorer(tokenizer, config)

    def score_with_steps(self, trajectories: Sequence[Trajectory]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(scores [N], step scores per trajectory) in one pass."""
        graphdef, state = nnx.split(self.model)  # picks up weights changed since construction
        return self.scorer.run(trajectories, lambda a: _explicit_batch(graphdef, state, a, self.loss),
                               steps_at="prefix_ends")

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        return self.score_with_steps(trajectories)[0]

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        return self.score_with_steps(trajectories)[1]


# --------------------------------------------------------------------------------------- implicit


@functools.partial(jax.jit, static_argnames=("graphdef", "ref_graphdef", "aggregate"))
def _implicit_batch(graphdef, state, ref_graphdef, ref_state, arrays, beta, aggregate: str):
    return implicit_batch_scores(nnx.merge(graphdef, state), nnx.merge(ref_graphdef, ref_state), arrays,
                                 beta=beta, how=aggregate)


def reference_state(policy: LlamaForCausalLM):
    """The reference of a LoRA-adapted policy: the same arrays with every adapter zeroed (no weight copy)."""
    from agentrm_jax.models.lora import LoRAParam  # noqa: PLC0415 (LoRA is optional)

    graphdef, lora, rest = nnx.split(policy, LoRAParam, ...)
    if not jax.tree.leaves(lora):
        raise ValueError("reference=None needs a policy with LoRA adapters (models.lora.add_lora); "
                         "otherwise pass the frozen reference model explicitly")
    zeros = jax.tree.map(jnp.zeros_like, lora)
    return graphdef, nnx.merge_state(zeros, rest)


class ImplicitPRM:
    """beta * log(pi_theta / pi_ref) summed over each step's agent tokens (see `rewards.implicit`).

    policy: the trained model pi_theta. reference: the frozen pi_ref, or None
      when the policy carries LoRA adapters: then the reference is the same
      weights with the adapters zeroed, with no second copy of the base.
    aggregate: how `score` combines step rewards: min / sum / last / mean
      ("sum" is the trajectory reward the outcome loss is trained on).
    """

    kind = "implicit"

    def __init__(self, policy: LlamaForCausalLM, reference: LlamaForCausalLM | None, tokenizer, *,
                 beta: float = 0.05, aggregate: str = "min", config: ScoringConfig = ScoringConfig()):
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        if not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        if reference is not None and reference.config.vocab_size != policy.config.vocab_size:
            raise ValueError(f"policy and reference vocabularies differ ({policy.config.vocab_size} vs "
                             f"{reference.config.vocab_size}); they must share a tokenizer")
        self.policy, self.reference = policy, reference
        self.beta, self.aggregate = float(beta), aggregate
        self.scorer = BatchedScorer(tokenizer, config)

    def _states(self):
        graphdef, state = nnx.split(self.policy)
        if self.reference is None:
            ref_graphdef, ref_state = reference_state(self.policy)
        else:
            ref_graphdef, ref_state = nnx.split(self.reference)
        return graphdef, state, ref_graphdef, ref_state

    def score_with_steps(self, trajectories: Sequence[Trajectory]) -> tuple[np.ndarray, list[np.ndarray]]:
        g, s, rg, rs = self._states()
        return self.scorer.run(trajectories, lambda a: _implicit_batch(g, s, rg, rs, a, self.beta, self.aggregate))

    def score(self, trajectories: Sequence[Trajectory]) -> np.ndarray:
        return self.score_with_steps(trajectories)[0]

    def score_steps(self, trajectories: Sequence[Trajectory]) -> list[np.ndarray]:
        return self.score_with_steps(trajectories)[1]


def compile_counts() -> dict[str, int]:
    """How many shapes each jitted scoring function has compiled (for tests and benchmarks)."""
    return {"explicit": _explicit_batch._cache_size(), "implicit": _implicit_batch._cache_size()}

