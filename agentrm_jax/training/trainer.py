"""The reward-model trainer: the loop around one jitted, sharded train step.

    train(config) -> TrainResult
    trained_model(config, checkpoint_dir) -> (model, checkpoint meta)

The pieces, each usable alone from JAX code, live beside it (and are re-exported here):

- `build_model(config)` (`training.model`): backbone (+ LoRA) (+ value head) and the filter of
  trainable parameters; `resolve_model_path`.
- `loss_sums(model, batch, ...)` (`training.losses`): the per-kind loss as (sum over valid rows, count)
  so micro-batches and devices add up exactly; pure, shape-static.
- `make_optimizer(config, total_steps)` (`training.optimizer`): AdamW with warmup + cosine decay and
  global-norm clipping.
- `TrainStep` (`training.step`): the step as one `jax.jit` function with explicit in/out shardings over a
  (data, fsdp, tensor) mesh: parameters placed by the logical-axis rules of `models.sharding`,
  batches split over data x fsdp, gradient accumulation by `lax.scan` over micro-batches.
- `eval_metrics`, `run_eval`, `auroc` (`training.metrics`).

The loop (`train`) adds the grain data pipeline, orbax checkpoints (trainable parameters, optimizer
state, step and data-iterator state; frozen base weights are reloaded from `config.model`),
`metrics.jsonl`, `train_config.json` (the run directory's layout: `training.run_dir`), evaluation
(loss, MSE, accuracy, AUROC) and a stop on a non-finite loss or gradient that keeps the last good
checkpoint. A rerun with the same `out` resumes from the newest intact checkpoint (a damaged one is set
aside as `<step>.corrupt`, and said so) and, on CPU, reproduces the losses of an uninterrupted run bit
for bit; `out` must be new, empty or a run, and `overwrite=True` clears the run there and starts over.
A resume with another run length (steps, or epochs over the data) rebuilds the warmup + cosine schedule
for the new length and says so (stderr, notes, a metrics.jsonl row, the checkpoints' `lr_schedule`):
the optimizer's step count continues, so the remaining steps take the new length's rates and the steps
done keep theirs. Every checkpoint records a fingerprint of `config.model`'s weight files
(`models.base_fingerprint`); a resume on other base weights is refused.
The step has no random ops: the data order (seeded, its iterator state checkpointed) is the run's only
randomness after initialisation.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from agentrm_jax.models.base_fingerprint import base_fingerprint, describe, fingerprint_change
from agentrm_jax.training.checkpoint import Checkpointer, CorruptCheckpointError
from agentrm_jax.training.config import TrainConfig, flat_config
from agentrm_jax.training.data import TrainBatches, load_examples
from agentrm_jax.training.losses import loss_sums
from agentrm_jax.training.mesh import initialize_distributed, training_mesh
from agentrm_jax.training.metrics import auroc, eval_metrics, run_eval
from agentrm_jax.training.model import build_model, resolve_model_path, start_head_at
from agentrm_jax.training.optimizer import learning_rate, make_optimizer
from agentrm_jax.training.run_dir import (CHECKPOINTS, METRICS_FILE, check_out_dir, clear_run, read_metrics,
                                          truncate_metrics, write_train_config)
from agentrm_jax.training.step import TrainStep

__all__ = ["CHECKPOINTS", "NonFiniteError", "TrainResult", "TrainStep", "auroc", "build_model", "eval_metrics",
           "iterate_losses", "learning_rate", "loss_sums", "make_optimizer", "resolve_model_path", "run_eval",
           "train", "trained_model"]

# Fields (flat names) that may change between a run and its resumption; any other change is refused.
# mesh and grad_accum change where and in how many pieces a step is computed, not what it computes (the
# checkpoint restores onto any mesh), and compute's fields only how the forward runs.
_RESUMABLE_FIELDS = {"steps", "epochs", "out", "save_every", "keep", "eval_every", "log_every", "eval", "mesh",
                     "grad_accum", "remat", "scan_layers", "attention", "device", "device_memory_gb", "architecture"}


class NonFiniteError(RuntimeError):
    """Training met a NaN / inf loss or gradient; the message names the step and the term."""



@dataclass(frozen=True)
class TrainResult:
    """What a finished run left: its directory, last step, per-step losses of this invocation, last eval.

    last_loss: the loss of the run's last step, from this invocation or, when it trained no step (the
    run was already complete), from metrics.jsonl (None if none was logged); eval likewise falls back to
    the last eval row of metrics.jsonl. notes: what train() said about the run directory on the way
    (checkpoints set aside, a run cleared by overwrite), also printed to stderr.
    """

    out: Path
    step: int
    losses: dict[int, float]
    eval: dict[str, float]
    resumed_from: int | None
    last_loss: float | None = None
    already_complete: bool = False
    notes: tuple[str, ...] = ()

    def loss_trend(self, digits: int = 2) -> str:
        """'loss FIRST -> LAST' over this invocation's steps, or 'last loss X' when it trained none."""
        if not self.losses:
            return f"last loss {self.last_loss}"
        first, last = self.losses[min(self.losses)], self.losses[max(self.losses)]
        return f"loss {first:.{digits}f} -> {last:.{digits}f}"


def _total_steps(config: TrainConfig, num_examples: int) -> int:
    if config.steps is not None:
        return config.steps
    return max(1, math.ceil(config.epochs * num_examples / config.data.batch_size))


def _check_resumable(saved: dict, config: TrainConfig, directory: Path) -> None:
    current = config.to_flat_dict()
    saved_flat = flat_config(saved, source=str(directory))[0]  # nested, or a legacy flat dict
    saved_flat.setdefault("head_init", "normal")  # runs saved before head_init existed had a normal head
    for key, value in saved_flat.items():
        if key not in _RESUMABLE_FIELDS and current.get(key) != value:
            raise ValueError(f"{directory} holds a run with {key}={value!r}, but this config has "
                             f"{key}={current.get(key)!r}; resume with the same settings, choose a new --out, "
                             "or pass --overwrite to start that run over")


def _check_base(meta: dict, base: dict | None, config: TrainConfig, directory: Path, note) -> None:
    """Refuses a resume whose base weights differ from the run's (`models.base_fingerprint`); a
    checkpoint saved before fingerprints existed is resumed with a warning."""
    saved = meta.get("base")
    if base is None:
        return
    if saved is None:
        note(f"{directory} was saved without a fingerprint of its base weights (an older run); resuming on "
             f"{describe(base)} as given: make sure it is the backbone the run started on")
        return
    if (change := fingerprint_change(saved, base)) is not None:
        raise ValueError(f"{directory} was trained on base weights {describe(saved)}, but TrainConfig.model "
                         f"({config.model}) now gives {describe(base)} ({change}); resume on the same base "
                         "weights, choose a new --out, or pass --overwrite to start that run over")


def _lr_schedule(meta: dict) -> list[dict]:
    """The schedule segments a checkpoint's steps were trained under: [{"from_step", "total_steps"}, ...];
    a checkpoint from before segments were recorded had one, of its `total_steps`."""
    return list(meta.get("lr_schedule") or [{"from_step": 0, "total_steps": meta.get("total_steps")}])


def _restore_newest_intact(checkpointer: Checkpointer, target, config: TrainConfig, out: Path, note,
                           base: dict | None = None):
    """(step, state, data_state, meta) of the newest checkpoint that reads back whole, or None when there
    is no checkpoint. Newer damaged ones are set aside (`<step>.corrupt`) and noted; when every checkpoint
    is damaged nothing is moved and a ValueError says how to go on. A changed config (beyond
    `_RESUMABLE_FIELDS`) or other base weights than `base` is a ValueError."""
    damaged: list[CorruptCheckpointError] = []
    for step in reversed(checkpointer.all_steps()):
        try:
            meta = checkpointer.read_meta(step)
            _check_resumable(meta.get("config", {}), config, out)
            _check_base(meta, base, config, out, note)
            state, data_state, _ = checkpointer.restore(step, target)
        except CorruptCheckpointError as err:
            damaged.append(err)
            continue
        for err in damaged:
            moved = checkpointer.set_aside(err.step)
            note(f"skipped damaged checkpoint step {err.step}: {err.damage}; moved it to {moved}; "
                 f"resuming from step {step}, the newest intact checkpoint")
        return step, state, data_state, meta
    if damaged:
        steps = "; ".join(f"step {err.step}: {err.damage}" for err in damaged)
        raise ValueError(f"no intact checkpoint in {checkpointer.directory} ({steps}); nothing was changed. "
                         "Restore the checkpoints from a backup, or rerun with --overwrite to start the run "
                         "over (it deletes them)")
    return None


def _base_identity(config: TrainConfig, backbone) -> dict | None:
    """The fingerprint of `config.model`'s weight files: what a resume must find again. A `backbone`
    passed in memory stands for config.model (checkpoints and export reload the base from it); when
    config.model then names no file there is nothing to fingerprint (None)."""
    try:
        path = resolve_model_path(config.model)
    except FileNotFoundError:
        if backbone is None:
            raise
        return None
    return base_fingerprint(path)


def _rebuilt_schedule(config: TrainConfig, before: int, after: int, done: int, note) -> dict:
    """Says that the LR schedule is rebuilt for a new run length, and returns the metrics.jsonl row that
    records it. The optimizer state's step count continues from `done`, so step done+1 on takes the rate
    the new schedule gives it, as in a run started with `after` steps; steps 1..done keep what they had."""
    old_next = learning_rate(config, before, done) if done < before else None
    new_next = learning_rate(config, after, done)
    was = f"{old_next:.3g} under the old one" if old_next is not None else "past the old one's end"
    note(f"the run length changed from {before} to {after} steps: steps 1-{done} were trained under the "
         f"warmup + cosine schedule of {before} steps; steps {done + 1}-{after} follow the schedule of {after} "
         f"steps (lr at step {done + 1}: {new_next:.3g}, {was}), as a run started with {after} steps would")
    return {"step": done, "lr_schedule_rebuilt": {"from_total_steps": before, "total_steps": after,
                                                  "next_lr": new_next, "next_lr_before": old_next}}


def _append_metrics(path: Path, row: dict) -> None:
    if jax.process_index() != 0:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def _first_bad_leaf(leaf_finite) -> str:
    for path, ok in nnx.to_flat_state(leaf_finite) if isinstance(leaf_finite, nnx.State) else []:
        if not bool(ok):
            return ".".join(map(str, path))
    return "?"




def _head_start(examples, loss: str) -> float:
    """The head output that predicts the examples' mean target: the mean (MSE), or its logit (BCE)."""
    mean = float(np.mean([float(ex["target"][0]) for ex in examples]))
    if loss == "bce":
        p = min(max(mean, 1e-4), 1 - 1e-4)
        return float(np.log(p / (1 - p)))
    return mean


def train(config: TrainConfig, *, progress: bool = True, backbone=None, tokenizer=None,
          on_step: Callable[[int, float], None] | None = None, overwrite: bool = False,
          examples_fn: Callable | None = None, evaluator: Callable[[int, nnx.Module], dict] | None = None
          ) -> TrainResult:
    """Train (or resume) the run `config` describes; see the module docstring.

    backbone / tokenizer: an already loaded LlamaForCausalLM and its tokenizer (tests, notebooks);
    by default both come from `config.model`. on_step(step, loss) is called after every step.
    examples_fn(path, data_config, tokenizer, field=...) -> examples replaces `training.data.load_examples`
    (policy SFT renders its demos with `sft.data`); evaluator(step, model) -> {name: number}, called where
    the eval set is evaluated (every outputs.eval_every steps and at the end) with the model as trained so
    far, adds its numbers to that metrics.jsonl row (policy SFT plays episodes there).
    `config.out` must be new, empty or a training run (resumed) unless `overwrite`, which deletes the
    run's files there (checkpoints/, metrics.jsonl, train_config.json; nothing else) and starts over.
    Raises NonFiniteError (the last good checkpoint stays the latest) on a NaN / inf loss or gradient,
    ValueError for an `out` that is not a run, a changed config, or a run whose checkpoints are all damaged.
    """
    if config.kind == "sft" and examples_fn is None:
        raise ValueError("kind: sft is policy fine-tuning on demos: run it with `agentrm sft --config ...` "
                         "(which renders the demos through the chat template), not `agentrm train`")
    initialize_distributed()
    out = Path(config.out)
    mesh = training_mesh(config.mesh)  # checks the device count before anything is loaded
    check_out_dir(out, overwrite)
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if jax.process_index() == 0:
            print(f"train: {message}", file=sys.stderr, flush=True)

    data_config = config.data
    if tokenizer is None:
        from agentrm_jax.models import load_tokenizer

        tokenizer = load_tokenizer(resolve_model_path(config.model))
    load = examples_fn or load_examples
    train_examples = load(data_config.train, data_config, tokenizer, field="train")
    if not train_examples:
        raise ValueError(f"TrainConfig.train: {data_config.train} holds no records")
    eval_examples = (load(data_config.eval, data_config, tokenizer, field="eval") if data_config.eval
                     else [])
    total_steps = _total_steps(config, len(train_examples))

    base = _base_identity(config, backbone)
    model, trainable_filter = build_model(config, backbone=backbone, mesh=mesh)  # weights straight to their shards
    head_start = None
    if config.head_init == "mean":  # a resumed run's checkpoint replaces this start
        head_start = _head_start(train_examples, config.objective.loss)
        start_head_at(model.head, head_start)
    step_fn = TrainStep(model, trainable_filter, config, mesh, total_steps)
    trainable = step_fn.initial_trainable
    opt_state = step_fn.init_opt_state(trainable)
    batches = TrainBatches(train_examples, data_config, process_index=jax.process_index(),
                           process_count=jax.process_count())

    if overwrite:
        if jax.process_index() == 0 and (cleared := clear_run(out)):
            note(cleared)
        _sync_hosts("agentrm_train_overwrite")
    checkpointer = Checkpointer(out / CHECKPOINTS, keep=config.outputs.keep)
    metrics_path = out / METRICS_FILE
    start, resumed_from = 0, None
    try:
        restored = _restore_newest_intact(checkpointer, {"params": trainable, "opt_state": opt_state}, config,
                                          out, note, base)
    except BaseException:
        checkpointer.close()
        raise
    if restored is None and head_start is not None:
        note(f"value head starts at the training targets' mean ({'logit ' if config.objective.loss == 'bce' else ''}"
             f"{head_start:.4g})")
    schedule = [{"from_step": 0, "total_steps": total_steps}]
    schedule_row = None
    if restored is not None:
        latest, state, data_state, meta = restored
        trainable, opt_state = state["params"], state["opt_state"]
        batches.set_state(data_state)
        start = resumed_from = latest
        schedule = _lr_schedule(meta)
        if schedule[-1]["total_steps"] not in (None, total_steps) and latest < total_steps:
            schedule_row = _rebuilt_schedule(config, schedule[-1]["total_steps"], total_steps, latest, note)
            schedule.append({"from_step": latest, "total_steps": total_steps})
        if jax.process_index() == 0:
            truncate_metrics(metrics_path, latest)
    if jax.process_index() == 0:
        if (renamed := write_train_config(out, config.to_dict())) is not None:
            note(renamed)
        if restored is None:
            metrics_path.write_text("")
        if schedule_row is not None and schedule_row not in read_metrics(metrics_path):
            _append_metrics(metrics_path, schedule_row)

    def save(step: int):
        checkpointer.save(step, {"params": trainable, "opt_state": opt_state}, data_state=batches.get_state(),
                          meta={"config": config.to_dict(), "step": step, "total_steps": total_steps,
                                "lr_schedule": schedule, **({"base": base} if base is not None else {})})

    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, desc="train sft policy" if config.kind == "sft" else f"train {config.kind} RM", unit="step", dynamic_ncols=True)
    outputs = config.outputs
    losses: dict[int, float] = {}
    last_eval: dict[str, float] = {}
    try:
        tokens_seen, t0 = 0, time.perf_counter()
        for step in range(start + 1, total_steps + 1):
            host_batch = next(batches)
            trainable, opt_state, metrics = step_fn.step(trainable, opt_state, step_fn.put_batch(host_batch))
            loss = float(metrics["loss"])
            if not bool(metrics["loss_finite"]) or not bool(metrics["grads_finite"]):
                term = ("the loss" if not bool(metrics["loss_finite"])
                        else f"the gradient of {_first_bad_leaf(jax.device_get(metrics['leaf_finite']))}")
                raise NonFiniteError(
                    f"step {step}: {term} is not finite (loss={loss}); stopped without saving this step. "
                    f"The last good checkpoint is step {checkpointer.latest_step()} in {out / CHECKPOINTS}; "
                    "lower TrainConfig.lr, raise warmup_steps or check the data before resuming")
            losses[step] = loss
            tokens_seen += int(np.asarray(host_batch["attention_mask"]).sum()) * jax.process_count()
            if on_step is not None:
                on_step(step, loss)
            row = None
            if step % outputs.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t0
                row = {"step": step, "loss": loss, "lr": learning_rate(config, total_steps, step - 1),
                       "grad_norm": float(metrics["grad_norm"]), "epoch": round(batches.epoch, 4),
                       "tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed > 0 else None}
            if eval_examples and ((outputs.eval_every and step % outputs.eval_every == 0) or step == total_steps):
                last_eval = run_eval(step_fn, trainable, eval_examples, config)
                row = {**(row or {"step": step}), **last_eval}
            if evaluator is not None and ((outputs.eval_every and step % outputs.eval_every == 0)
                                          or step == total_steps):
                row = {**(row or {"step": step}), **evaluator(step, nnx.merge(step_fn.graphdef, trainable,
                                                                              step_fn.frozen))}
            if row is not None:
                _append_metrics(metrics_path, row)
            if step % outputs.save_every == 0 or step == total_steps:
                save(step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", **({"eval": f"{last_eval['eval_loss']:.4f}"} if last_eval else {}))
    finally:
        if bar is not None:
            bar.close()
        checkpointer.close()
    final = max([start, *losses])
    last_loss = losses[final] if losses else None
    if not losses or not last_eval:  # nothing (or no eval) this time: what the run logged before
        rows = [row for row in read_metrics(metrics_path) if row.get("step", 0) <= final]
        if last_loss is None:
            last_loss = next((row["loss"] for row in reversed(rows) if "loss" in row), None)
        if not last_eval and eval_examples:
            last_eval = next(({k: v for k, v in row.items() if k.startswith("eval_")} for row in reversed(rows)
                              if "eval_loss" in row), {})
    return TrainResult(out=out, step=final, losses=losses, eval=last_eval, resumed_from=resumed_from,
                       last_loss=last_loss, already_complete=not losses and resumed_from is not None,
                       notes=tuple(notes))


def _sync_hosts(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def trained_model(config: TrainConfig, checkpoint_dir: str | Path, *, step: int | None = None, backbone=None):
    """The model of a run's checkpoint (base reloaded from config.model, trainable weights restored).
    Only the checkpoint's params are read: its optimizer state (AdamW's two moments, twice the trained
    weights) is never loaded."""
    model, trainable_filter = build_model(config, backbone=backbone)
    graphdef, trainable, frozen = nnx.split(model, trainable_filter, ...)
    with Checkpointer(checkpoint_dir) as checkpointer:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                               sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                                trainable)
        state, _, meta = checkpointer.restore(step, {"params": abstract}, partial=True)
    return nnx.merge(graphdef, state["params"], frozen), meta


def iterate_losses(path: str | Path) -> Iterator[tuple[int, float]]:
    """(step, loss) of every row of a metrics.jsonl that has a loss."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row:
            yield row["step"], row["loss"]

