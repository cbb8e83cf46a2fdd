"""Input pipeline of the reward-model trainer: JSONL records -> rendered examples -> fixed-shape host batches.

Three RM kinds read two record types (see `agentrm_jax.records`):

    explicit  trajectory records; regression target = the record's `target` field (default "value")
    implicit  trajectory records; outcome label = the record's `target` field (default "success")
    pairwise  {"id", "chosen": trajectory, "rejected": trajectory}

`target` is one of "value", "progress" (numbers in [0, 1]) or "success"
(true -> 1.0, false -> 0.0). A record without it is an error naming
file:line and the field: nothing is dropped silently.

`DataConfig` (defined in `training.sections`, re-exported here) is the data section of a
`TrainConfig` (`config.data`), which every function here takes whole.

Examples (`load_examples`; every record parsed and rendered once, eagerly).
A *row* is one rendered trajectory:

    input_ids     int32   [T]  tokens of `render_for_rm` (T <= max_length)
    agent_mask    bool    [T]  assistant-content tokens (what an implicit PRM sums over)
    target_index  int32   [1]  token where the score is read: the last token of the rendering
                               (after the last observation), where `rewards.scoring.ExplicitRM.score`
                               reads a trajectory's score, so training and search agree
    target        float32 [1]  regression target at target_index (explicit, implicit: the target
                               field's value; pairwise: 0, unused)
    label         float32 []   explicit, implicit: the target field's value; pairwise: 1 chosen, 0 rejected
    truncated     bool    []   whether render_for_rm cut the trajectory to fit max_length

An explicit/implicit example is one row dict; a pairwise example is
`{"chosen": row, "rejected": row}`. Truncation (`render_for_rm`) keeps the
end of a trajectory, so every record keeps its scoring token.

Batches (`collate`, `TrainBatches`, `eval_batches`), right-padded host numpy arrays:

    input_ids       int32   [R, L]  0 after each row's real tokens
    attention_mask  bool    [R, L]  True on real tokens
    agent_mask      bool    [R, L]
    target_index    int32   [R, 1]  -1 = no target (filler rows)
    targets         float32 [R, 1]  0 where target_index is -1
    labels          float32 [R]
    weights         float32 [R]     1 for real rows, 0 for filler rows

R = records per host batch (pairwise: 2 x pairs, rows INTERLEAVED: row 2i is the
chosen trajectory of pair i, row 2i+1 its rejected one, so any contiguous
even-sized shard of the rows keeps pairs together). L =
`models.buckets.bucket_length(longest row of the GLOBAL batch, min_length_bucket)`,
the same on every host (a global array needs equal per-host shapes), so the
distinct shapes are bounded by the length buckets up to bucket_length(max_length).
Filler rows (eval's last batch) hold one real token (attention_mask[:, 0] is True,
so no row is fully masked), target_index -1 and weight 0.

Training order: the examples are shuffled by a seed derived from `DataConfig.seed`,
with a different permutation each epoch, forever (grain
`MapDataset.source(...).shuffle(...).repeat()`), and cut into global batches of
`batch_size` records; batches run across epoch boundaries, so every batch is
full and every run of len(examples) consecutive records is one epoch's
permutation (so a batch straddling an epoch boundary may hold one example
twice, once from each epoch). Host `process_index` of `process_count` takes the contiguous slice
[p * b, (p + 1) * b) of each global batch, b = batch_size // process_count. The
iterator state is the number of global batches consumed (JSON), so a
checkpoint resumes bitwise-identically, even with a different process_count.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np

from agentrm_jax.models.buckets import bucket_length
from agentrm_jax.records import RecordError, Trajectory, iter_jsonl_lines
from agentrm_jax.rewards.rendering import render_for_rm
from agentrm_jax.training.sections import KINDS, TARGETS, DataConfig

__all__ = ["KINDS", "TARGETS", "DataConfig", "TrainBatches", "collate", "eval_batches", "length_report",
           "load_examples", "num_eval_batches"]

_BATCH_KEYS = ("input_ids", "attention_mask", "agent_mask", "target_index", "targets", "labels", "weights")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# ------------------------------------------------------------------------------------------- loading


def _row(trajectory: Trajectory, tokenizer, max_length: int, target: float, label: float) -> dict:
    """One rendered trajectory as a row dict (see the module docstring)."""
    r = render_for_rm(trajectory, tokenizer, max_length=max_length)
    index = r.length - 1  # the state after the last observation, as ExplicitRM.score reads it
    return {"input_ids": r.input_ids.astype(np.int32), "agent_mask": r.agent_mask.astype(bool),
            "target_index": np.asarray([index], np.int32), "target": np.asarray([target], np.float32),
            "label": np.asarray(label, np.float32), "truncated": np.asarray(r.truncated)}


def _target_value(trajectory: Trajectory, field: str) -> float | None:
    value = getattr(trajectory, field)
    return None if value is None else float(value)  # success: True -> 1.0, False -> 0.0


def _rows(example: dict) -> list[dict]:
    return [example["chosen"], example["rejected"]] if "chosen" in example else [example]


def load_examples(path: str | os.PathLike, config: DataConfig, tokenizer, *, field: str = "train"
                  ) -> list[dict]:
    """Parse and render every record of a JSONL file (blank lines skipped), in file order.

    `field` names the config field the path came from, for the error message.
    Raises FileNotFoundError for a missing file and RecordError naming
    file:line and the field for a malformed record or a missing target.
    Warns once with the number of trajectories cut to `max_length`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (DataConfig.{field} should name a JSONL file of "
                                f"{'pairwise' if config.kind == 'pairwise' else 'trajectory'} records)")
    target_field = config.target_field
    examples: list[dict] = []
    for lineno, record in iter_jsonl_lines(path, "pair" if config.kind == "pairwise" else "trajectory"):
        if config.kind == "pairwise":
            examples.append({"chosen": _row(record.chosen, tokenizer, config.max_length, 0.0, 1.0),
                             "rejected": _row(record.rejected, tokenizer, config.max_length, 0.0, 0.0)})
            continue
        value = _target_value(record, target_field)
        if value is None:
            raise RecordError(f"{config.kind} records need {target_field!r} (DataConfig.target={target_field!r}); "
                              "this record has none", path=str(path), line=lineno, field=target_field)
        examples.append(_row(record, tokenizer, config.max_length, value, value))
    cut = sum(bool(r["truncated"]) for ex in examples for r in _rows(ex))
    if cut:
        warnings.warn(f"{path}: {cut} trajectories exceeded max_length={config.max_length} tokens; kept the "
                      "instruction and the most recent steps", stacklevel=2)
    return examples


def length_report(examples: Sequence[dict]) -> dict:
    """Token statistics over the rows of some examples: count, rows, max/mean tokens, truncated rows."""
    lengths = [r["input_ids"].shape[0] for ex in examples for r in _rows(ex)]
    return {"count": len(examples), "rows": len(lengths), "max_tokens": max(lengths, default=0),
            "mean_tokens": float(np.mean(lengths)) if lengths else 0.0,
            "truncated": sum(bool(r["truncated"]) for ex in examples for r in _rows(ex))}


# ------------------------------------------------------------------------------------------ batching


def _max_length(examples: Sequence[dict]) -> int:
    return max((r["input_ids"].shape[0] for ex in examples for r in _rows(ex)), default=1)


def collate(examples: Sequence[dict], config: DataConfig, *, batch_rows: int, length: int | None = None
            ) -> dict[str, np.ndarray]:
    """Right-padded fixed-shape host batch of `batch_rows` rows (layout in the module docstring).

    length: the padded length L; None = bucket_length of the longest row here.
    Rows beyond the examples' are filler (weight 0, target_index -1).
    """
    rows = [r for ex in examples for r in _rows(ex)]
    if len(rows) > batch_rows:
        raise ValueError(f"{len(examples)} examples give {len(rows)} rows, more than batch_rows={batch_rows}")
    longest = _max_length(examples)
    if length is None:
        length = bucket_length(longest, config.min_length_bucket)
    elif length < longest:
        raise ValueError(f"length={length} is shorter than the longest row ({longest} tokens)")
    ids = np.zeros((batch_rows, length), np.int32)
    attention = np.zeros((batch_rows, length), bool)
    agent = np.zeros((batch_rows, length), bool)
    target_index = np.full((batch_rows, 1), -1, np.int32)
    targets = np.zeros((batch_rows, 1), np.float32)
    labels = np.zeros((batch_rows,), np.float32)
    weights = np.zeros((batch_rows,), np.float32)
    attention[:, 0] = True  # filler rows keep one real token: a fully masked row can give NaN
    for i, r in enumerate(rows):
        n = r["input_ids"].shape[0]
        ids[i, :n] = r["input_ids"]
        attention[i, :n] = True
        agent[i, :n] = r["agent_mask"]
        target_index[i] = r["target_index"]
        targets[i] = r["target"]
        labels[i] = r["label"]
        weights[i] = 1.0
    return {"input_ids": ids, "attention_mask": attention, "agent_mask": agent, "target_index": target_index,
            "targets": targets, "labels": labels, "weights": weights}


def _host_slice(process_index: int, process_count: int, batch_size: int) -> slice:
    if not (_is_int(process_count) and process_count >= 1):
        raise ValueError(f"process_count must be an integer >= 1, got {process_count!r}")
    if not (_is_int(process_index) and 0 <= process_index < process_count):
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index!r}")
    if batch_size % process_count:
        raise ValueError(f"DataConfig.batch_size={batch_size} is not divisible by process_count={process_count}; "
                         f"use a multiple of {process_count}")
    per_host = batch_size // process_count
    return slice(process_index * per_host, (process_index + 1) * per_host)


def _grain_seed(seed: int) -> int:
    # grain reshuffles epoch e with seed + e, so seeds s and s + 1 would share
    # shifted epoch orders; hashing the user's seed makes such overlaps negligible.
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


_EPOCH_CAP = 1 << 40  # examples the repeated stream holds at most: far beyond any run's steps x batch


def _no_threads(dataset: grain.MapDataset) -> grain.DatasetIterator:
    # The examples are in memory and collation is cheap: grain's default
    # ReadOptions (16 threads, 500-element prefetch) would only fight over the GIL
    # and collate hundreds of batches ahead.
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)))


class TrainBatches:
    """The training iterator: infinite, deterministic, checkpointable (see the module docstring).

    Yields this host's collated batches of (batch_size // process_count) records.
    `get_state()` is a JSON-serialisable dict; `set_state` on a fresh instance
    over the same examples and config resumes bitwise-identically.
    """

    def __init__(self, examples: Sequence[dict], config: DataConfig, *, process_index: int = 0,
                 process_count: int = 1):
        if not examples:
            raise ValueError(f"no training examples (DataConfig.train={config.train!r} is empty?)")
        self.config = config
        self.num_examples = len(examples)
        self._slice = _host_slice(process_index, process_count, config.batch_size)
        self.batch_rows = (self._slice.stop - self._slice.start) * config.rows_per_example
        records = grain.MapDataset.source(list(examples))
        # A new permutation each epoch. The epochs are finite only because grain's endless repeat has
        # length sys.maxsize, which batch(1) keeps and len() cannot return (OverflowError); the order is
        # the endless stream's (same seeds per epoch), so runs resume bitwise as before.
        epochs = _EPOCH_CAP // len(examples)
        stream = records.shuffle(seed=_grain_seed(config.seed)).repeat(epochs)
        self._dataset = stream.batch(config.batch_size, batch_fn=list).map(self._collate_host)
        self._iterator = _no_threads(self._dataset)

    def _collate_host(self, global_batch: list[dict]) -> dict[str, np.ndarray]:
        length = bucket_length(_max_length(global_batch), self.config.min_length_bucket)
        return collate(global_batch[self._slice], self.config, batch_rows=self.batch_rows, length=length)

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    @property
    def step(self) -> int:
        """Global batches consumed."""
        return int(self._iterator.get_state()["next_index"])

    @property
    def epoch(self) -> float:
        """Epochs consumed (records consumed / number of examples)."""
        return self.step * self.config.batch_size / self.num_examples

    def _identity(self) -> dict:
        return {"num_examples": self.num_examples, "batch_size": self.config.batch_size,
                "seed": self.config.seed, "kind": self.config.kind}

    def get_state(self) -> dict:
        return {"next_index": self.step, **self._identity()}

    def set_state(self, state: dict) -> None:
        for key, expected in self._identity().items():
            if state.get(key) != expected:
                raise ValueError(f"data iterator state was saved with {key}={state.get(key)!r} but this run has "
                                 f"{key}={expected!r}; resuming would not continue the same order")
        index = state.get("next_index")
        if not _is_int(index) or index < 0:
            raise ValueError(f"data iterator state needs next_index >= 0, got {index!r}")
        self._iterator.set_state({"next_index": int(index)})


def eval_batches(examples: Sequence[dict], config: DataConfig, *, process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
    """Every example exactly once, in file order: ceil(len / batch_size) batches on every host.

    Host p takes its slice of each global batch; the last batches are padded
    with weight-0 filler rows (a host may get filler only).
    """
    host = _host_slice(process_index, process_count, config.batch_size)
    rows = (host.stop - host.start) * config.rows_per_example
    if not examples:
        return iter(())

    def collate_host(global_batch: list[dict]) -> dict[str, np.ndarray]:
        length = bucket_length(_max_length(global_batch), config.min_length_bucket)
        return collate(global_batch[host], config, batch_rows=rows, length=length)

    dataset = grain.MapDataset.source(list(examples)).batch(config.batch_size, batch_fn=list).map(collate_host)
    return _no_threads(dataset)


def num_eval_batches(num_examples: int, config: DataConfig) -> int:
    """How many batches `eval_batches` yields (the same on every host)."""
    return math.ceil(num_examples / config.batch_size)
