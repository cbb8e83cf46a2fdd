"""The reward-model trainer: one jitted, sharded train step and the loop around it.

    train(config) -> TrainResult

Pieces, each usable alone from JAX code:

- `build_model(config)`: backbone (+ LoRA) (+ value head) and the filter of trainable parameters.
- `loss_sums(model, batch, ...)`: the per-kind loss as (sum over valid rows, count) so micro-batches
  and devices add up exactly; pure, shape-static.
- `make_optimizer(config, total_steps)`: AdamW with warmup + cosine decay and global-norm clipping.
- `TrainStep`: the step as one `jax.jit` function with explicit in/out shardings over a
  (data, fsdp, tensor) mesh: parameters placed by the logical-axis rules of `models.sharding`,
  batches split over data x fsdp, gradient accumulation by `lax.scan` over micro-batches.

The loop (`train`) adds the grain data pipeline, orbax checkpoints (trainable parameters, optimizer
state, step and data-iterator state; frozen base weights are reloaded from `config.model`),
`metrics.jsonl`, `train_config.json` (the run directory's layout: `training.run_dir`), evaluation
(loss, MSE, accuracy, AUROC) and a stop on a non-finite loss or gradient that keeps the last good
checkpoint. A rerun with the same `out` resumes from the newest intact checkpoint (a damaged one is set
aside as `<step>.corrupt`, and said so) and, on CPU, reproduces the losses of an uninterrupted run bit
for bit; `out` must be new, empty or a run, and `overwrite=True` clears the run there and starts over.
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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from agentrm_jax.models.lora import LoRAParam, add_lora
from agentrm_jax.models.sharding import ShardingPlan, param_shardings
from agentrm_jax.rewards.explicit import bce_with_logits, gather_positions, score_transform
from agentrm_jax.rewards.heads import HeadConfig, ValueModel
from agentrm_jax.rewards.implicit import implicit_token_rewards, token_logprobs, trajectory_rewards
from agentrm_jax.training.checkpoint import Checkpointer, CorruptCheckpointError
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.data import TrainBatches, eval_batches, load_examples
from agentrm_jax.training.mesh import initialize_distributed, training_mesh
from agentrm_jax.training.run_dir import (CHECKPOINTS, METRICS_FILE, check_out_dir, clear_run, read_metrics,
                                          truncate_metrics, write_train_config)

__all__ = ["NonFiniteError", "TrainResult", "TrainStep", "build_model", "eval_metrics", "loss_sums",
           "make_optimizer", "resolve_model_path", "train"]

# Fields that may change between a run and its resumption; any other change is refused.
_RESUMABLE_FIELDS = {"steps", "epochs", "out", "save_every", "keep", "eval_every", "log_every", "eval"}


class NonFiniteError(RuntimeError):
    """Training met a NaN / inf loss or gradient; the message names the step and the term."""


# ------------------------------------------------------------------------------------------ model


def resolve_model_path(model: str) -> Path:
    """`bundled` -> the bundled GGUF; otherwise the path itself, which must exist."""
    if model == "bundled":
        from agentrm_jax.models import bundled_model_path

        return bundled_model_path()
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"TrainConfig.model: {path} does not exist; give an HF directory "
                                "(config.json + *.safetensors), a .gguf file, or 'bundled'")
    return path


def build_model(config: TrainConfig, *, backbone=None) -> tuple[nnx.Module, Any]:
    """The model to train and the nnx filter of its trainable parameters.

    explicit / pairwise: a `ValueModel` (backbone + value head seeded by config.seed);
    implicit: the causal LM itself (its reference is the same weights with the adapters
    zeroed under LoRA, or a frozen copy of the base under full fine-tuning: see `_reference`).
    LoRA adapters are added for finetune="lora". `backbone` (a LlamaForCausalLM) skips loading.
    """
    if backbone is None:
        from agentrm_jax.models import load_model

        param_dtype = "float32"  # master weights stay float32; bf16 is the compute dtype
        compute = "bfloat16" if config.precision == "bf16" else "float32"
        backbone = load_model(resolve_model_path(config.model), dtype=compute, param_dtype=param_dtype)
    if config.finetune == "lora":
        add_lora(backbone, rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets,
                 seed=config.seed)
    if config.kind == "implicit":
        model = backbone
    else:
        model = ValueModel.create(backbone, HeadConfig(mlp_size=config.head_mlp), seed=config.seed)
    if config.finetune == "full":
        trainable = nnx.Param
    elif config.finetune == "lora":
        trainable = LoRAParam if config.kind == "implicit" else nnx.Any(LoRAParam, nnx.PathContains("head"))
    else:
        trainable = nnx.PathContains("head")
    return model, trainable


# ------------------------------------------------------------------------------------------- loss


def loss_sums(model, batch: dict[str, jax.Array], *, kind: str, loss: str = "mse", beta: float = 0.05,
              margin: float = 0.0, reference: Callable | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(sum of per-row losses over valid rows, number of valid rows, per-row scores [R]) of one batch.

    batch: the arrays of `training.data` (input_ids, attention_mask, agent_mask [R, L], target_index,
    targets [R, 1], labels, weights [R]); rows with weight 0 are filler and count for nothing.
    explicit: the head output at target_index, MSE to the target or BCE-with-logits ("bce").
    implicit: r = beta * sum over agent tokens of log pi_theta - log pi_ref; BCE(sigmoid(r), label).
      `reference(input_ids, attention_mask) -> logits` gives pi_ref (gradients are stopped).
    pairwise: rows 2i / 2i+1 are chosen / rejected; -log sigmoid(s_c - s_r - margin) per pair.
    Scores are what the RM reports for each row (head output, or the implicit reward r).
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weights = batch["weights"].astype(jnp.float32)
    if kind == "implicit":
        logits = model(ids, mask)
        ref_logits = jax.lax.stop_gradient(reference(ids, mask))
        token_rewards = implicit_token_rewards(token_logprobs(logits, ids), token_logprobs(ref_logits, ids),
                                               batch["agent_mask"] & mask.astype(bool), beta)
        scores = trajectory_rewards(token_rewards)
        per_row = bce_with_logits(scores, batch["labels"].astype(jnp.float32))
        valid = weights > 0
    else:
        values = model(ids, mask)
        scores = gather_positions(values.astype(jnp.float32), batch["target_index"])[:, 0]
        if kind == "explicit":
            target = batch["targets"][:, 0].astype(jnp.float32)
            per_row = jnp.square(scores - target) if loss == "mse" else bce_with_logits(scores, target)
            valid = (weights > 0) & (batch["target_index"][:, 0] >= 0)
        elif kind == "pairwise":
            diff = scores[0::2] - scores[1::2] - margin
            per_row = -jax.nn.log_sigmoid(diff)
            valid = weights[0::2] > 0
        else:
            raise ValueError(f"unknown RM kind {kind!r}")
    # where, not multiply: a NaN in a filler row must not reach the sum or its gradient
    total = jnp.sum(jnp.where(valid, per_row, 0.0))
    return total, jnp.sum(valid).astype(jnp.float32), scores


# -------------------------------------------------------------------------------------- optimizer


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clip, then AdamW (decay on matrices only) with linear warmup and cosine decay."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else config.lr, peak_value=config.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=config.lr * config.min_lr_ratio)
    adamw = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=1e-8, weight_decay=config.weight_decay,
                        mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))
    parts = ([optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip > 0 else []) + [adamw]
    return optax.chain(*parts)


def learning_rate(config: TrainConfig, total_steps: int, step: int) -> float:
    """The learning rate `make_optimizer` applies at (0-based) update `step`, for logs."""
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else config.lr, peak_value=config.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=config.lr * config.min_lr_ratio)
    return float(schedule(step))


# ------------------------------------------------------------------------------------------- step


def _micro_batches(x: jax.Array, accum: int, unit: int) -> jax.Array:
    """[R, ...] -> [accum, R / accum, ...], micro-batch a = units i * accum + a.

    Interleaving keeps every device's contiguous shard of rows contributing to every micro-batch
    (no data moves between devices), and `unit` rows (2 for pairs) stay together.
    """
    rows = x.shape[0]
    x = x.reshape(rows // (unit * accum), accum, unit, *x.shape[1:])
    x = jnp.moveaxis(x, 1, 0)
    return x.reshape(accum, rows // accum, *x.shape[3:])


class TrainStep:
    """The sharded, jitted train and eval steps of one model on one mesh.

    state: `trainable` (nnx.State of the parameters being trained) and `opt_state`; the frozen
    rest of the model is held here. `step(trainable, opt_state, batch) -> (trainable, opt_state,
    metrics)` donates its state; `evaluate(trainable, batch) -> (loss sum, count, scores)`.
    """

    def __init__(self, model: nnx.Module, trainable_filter, config: TrainConfig, mesh, total_steps: int):
        self.config = config
        self.mesh = mesh
        plan = ShardingPlan(mesh)
        # Place every parameter on the mesh (raises before compiling when a dimension does not divide).
        shardings = param_shardings(model, plan)
        graphdef, trainable, frozen = nnx.split(model, trainable_filter, ...)
        if not jax.tree.leaves(trainable):
            raise ValueError(f"finetune={config.finetune!r} leaves nothing to train in this model")
        flat_shardings = {p: s for p, s in nnx.to_flat_state(shardings)}

        def place(state):
            def one(path, var):
                sharding = flat_shardings.get(path, NamedSharding(mesh, P()))
                return jax.device_put(var, sharding)
            return nnx.map_state(one, state)

        self.graphdef = graphdef
        self.trainable_shardings = nnx.map_state(lambda p, v: flat_shardings.get(p, NamedSharding(mesh, P())),
                                                 trainable)
        self.frozen = place(frozen)
        trainable = place(trainable)
        self.tx = make_optimizer(config, total_steps)
        replicated = NamedSharding(mesh, P())
        abstract_opt = jax.eval_shape(self.tx.init, trainable)
        self.opt_shardings = optax.tree_map_params(
            self.tx, lambda _, s: s, abstract_opt, self.trainable_shardings,
            transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, nnx.Variable))
        self.initial_trainable = trainable
        self.batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
        self.replicated = replicated
        self._reference = self._make_reference(model)
        self._step = jax.jit(self._step_fn, donate_argnums=(0, 1),
                             in_shardings=(self.trainable_shardings, self.opt_shardings, None, self.batch_sharding),
                             out_shardings=(self.trainable_shardings, self.opt_shardings, replicated))
        self._eval = jax.jit(self._eval_fn, in_shardings=(self.trainable_shardings, None, self.batch_sharding),
                             out_shardings=replicated)
        self._init_opt = jax.jit(self.tx.init, out_shardings=self.opt_shardings)

    def init_opt_state(self, trainable):
        return self._init_opt(trainable)

    def _make_reference(self, model):
        """For implicit: (frozen reference arrays, graphdef) giving pi_ref logits; None otherwise."""
        if self.config.kind != "implicit":
            return None
        if self.config.finetune == "lora":
            return "lora"  # same weights, adapters zeroed: built inside the step from the trainable state
        graphdef, params = nnx.split(model)
        # full fine-tuning: a frozen copy of the initial weights, placed like the model's
        return graphdef, jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, params)

    def _reference_logits(self, trainable, frozen):
        if self._reference is None:
            return None
        if self._reference == "lora":
            zeros = jax.tree.map(jnp.zeros_like, trainable)
            ref_model = nnx.merge(self.graphdef, zeros, frozen)
        else:
            ref_graphdef, ref_params = self._reference
            ref_model = nnx.merge(ref_graphdef, ref_params)
        return lambda ids, mask: ref_model(ids, mask)

    def _loss(self, trainable, frozen, batch, count):
        model = nnx.merge(self.graphdef, trainable, frozen)
        total, _, _ = loss_sums(model, batch, kind=self.config.kind, loss=self.config.loss, beta=self.config.beta,
                                margin=self.config.margin, reference=self._reference_logits(trainable, frozen))
        return total / count

    def _count(self, batch):
        weights = batch["weights"]
        if self.config.kind == "pairwise":
            weights = weights[0::2]
        valid = weights > 0
        if self.config.kind == "explicit":
            valid = valid & (batch["target_index"][:, 0] >= 0)
        return jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)

    def _step_fn(self, trainable, opt_state, frozen, batch):
        accum = self.config.grad_accum
        count = self._count(batch)
        grad_fn = jax.value_and_grad(self._loss)
        if accum == 1:
            loss, grads = grad_fn(trainable, frozen, batch, count)
        else:
            unit = 2 if self.config.kind == "pairwise" else 1
            micro = jax.tree.map(lambda x: _micro_batches(x, accum, unit), batch)

            def one(carry, mb):
                loss_acc, grad_acc = carry
                loss_mb, grads_mb = grad_fn(trainable, frozen, mb, count)
                return (loss_acc + loss_mb, jax.tree.map(jnp.add, grad_acc, grads_mb)), None

            zeros = jax.tree.map(jnp.zeros_like, trainable)
            (loss, grads), _ = jax.lax.scan(one, (jnp.zeros((), jnp.float32), zeros), micro)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        leaf_finite = jax.tree.map(lambda g: jnp.all(jnp.isfinite(g)), grads)
        metrics = {"loss": loss, "grad_norm": grad_norm, "rows": count, "loss_finite": jnp.isfinite(loss),
                   "grads_finite": jnp.isfinite(grad_norm), "leaf_finite": leaf_finite}
        return trainable, opt_state, metrics

    def _eval_fn(self, trainable, frozen, batch):
        model = nnx.merge(self.graphdef, trainable, frozen)
        total, count, scores = loss_sums(model, batch, kind=self.config.kind, loss=self.config.loss,
                                         beta=self.config.beta, margin=self.config.margin,
                                         reference=self._reference_logits(trainable, frozen))
        # replicated outputs: every host gets the global rows, so metrics need no further gathering
        return {"loss_sum": total, "count": count, "scores": scores, "targets": batch["targets"][:, 0],
                "labels": batch["labels"], "weights": batch["weights"]}

    def put_batch(self, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This host's rows -> global arrays split over data x fsdp (every host passes its own slice)."""
        def one(x):
            global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
            return jax.make_array_from_process_local_data(self.batch_sharding, x, global_shape)
        return {k: one(v) for k, v in host_batch.items()}

    def step(self, trainable, opt_state, batch):
        return self._step(trainable, opt_state, self.frozen, batch)

    def evaluate(self, trainable, batch):
        return self._eval(trainable, self.frozen, batch)

    def compile_count(self) -> int:
        """Distinct train-step programs compiled so far (one per length bucket)."""
        return self._step._cache_size()


# ------------------------------------------------------------------------------------------ metrics


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count half); nan if one class is absent."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def eval_metrics(config: TrainConfig, scores: np.ndarray, batches_targets: np.ndarray, labels: np.ndarray,
                 loss: float) -> dict[str, float]:
    """Eval metrics from the real rows' scores: loss always; explicit: MSE (of the score transform) and,
    for binary targets, accuracy at 0.5 and AUROC; implicit: accuracy (r > 0 vs label) and AUROC;
    pairwise: the fraction of pairs ranked right."""
    out = {"eval_loss": float(loss)}
    if config.kind == "explicit":
        pred = np.asarray(score_transform(config.loss)(jnp.asarray(scores)))
        out["eval_mse"] = float(np.mean((pred - batches_targets) ** 2))
        if np.all(np.isin(batches_targets, (0.0, 1.0))):
            out["eval_accuracy"] = float(np.mean((pred > 0.5) == (batches_targets > 0.5)))
            out["eval_auroc"] = auroc(pred, batches_targets)
    elif config.kind == "implicit":
        out["eval_accuracy"] = float(np.mean((scores > 0) == (labels > 0.5)))
        out["eval_auroc"] = auroc(scores, labels > 0.5)
    else:
        out["eval_pair_accuracy"] = float(np.mean(scores[0::2] > scores[1::2]))
    return out


# ------------------------------------------------------------------------------------------ loop


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


def _total_steps(config: TrainConfig, num_examples: int) -> int:
    if config.steps is not None:
        return config.steps
    return max(1, math.ceil(config.epochs * num_examples / config.batch_size))


def _check_resumable(saved: dict, config: TrainConfig, directory: Path) -> None:
    current = config.to_dict()
    for key, value in saved.items():
        if key not in _RESUMABLE_FIELDS and current.get(key) != value:
            raise ValueError(f"{directory} holds a run with {key}={value!r}, but this config has "
                             f"{key}={current.get(key)!r}; resume with the same settings, choose a new --out, "
                             "or pass --overwrite to start that run over")


def _restore_newest_intact(checkpointer: Checkpointer, target, config: TrainConfig, out: Path, note):
    """(step, state, data_state) of the newest checkpoint that reads back whole, or None when there is
    no checkpoint. Newer damaged ones are set aside (`<step>.corrupt`) and noted; when every checkpoint
    is damaged nothing is moved and a ValueError says how to go on."""
    damaged: list[CorruptCheckpointError] = []
    for step in reversed(checkpointer.all_steps()):
        try:
            meta = checkpointer.read_meta(step)
            _check_resumable(meta.get("config", {}), config, out)
            state, data_state, _ = checkpointer.restore(step, target)
        except CorruptCheckpointError as err:
            damaged.append(err)
            continue
        for err in damaged:
            moved = checkpointer.set_aside(err.step)
            note(f"skipped damaged checkpoint step {err.step}: {err.damage}; moved it to {moved}; "
                 f"resuming from step {step}, the newest intact checkpoint")
        return step, state, data_state
    if damaged:
        steps = "; ".join(f"step {err.step}: {err.damage}" for err in damaged)
        raise ValueError(f"no intact checkpoint in {checkpointer.directory} ({steps}); nothing was changed. "
                         "Restore the checkpoints from a backup, or rerun with --overwrite to start the run "
                         "over (it deletes them)")
    return None


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


def run_eval(step_fn: TrainStep, trainable, examples, config: TrainConfig) -> dict[str, float]:
    """Loss and metrics of `examples` under the current parameters (every example exactly once)."""
    total, count = 0.0, 0.0
    scores, targets, labels = [], [], []
    for batch in eval_batches(examples, config.data_config(), process_index=jax.process_index(),
                              process_count=jax.process_count()):
        out = jax.device_get(step_fn.evaluate(trainable, step_fn.put_batch(batch)))
        total += float(out["loss_sum"])
        count += float(out["count"])
        real = out["weights"] > 0
        scores.append(out["scores"][real])
        targets.append(out["targets"][real])
        labels.append(out["labels"][real])
    return eval_metrics(config, np.concatenate(scores), np.concatenate(targets), np.concatenate(labels),
                        total / max(count, 1.0))


def train(config: TrainConfig, *, progress: bool = True, backbone=None, tokenizer=None,
          on_step: Callable[[int, float], None] | None = None, overwrite: bool = False) -> TrainResult:
    """Train (or resume) the run `config` describes; see the module docstring.

    backbone / tokenizer: an already loaded LlamaForCausalLM and its tokenizer (tests, notebooks);
    by default both come from `config.model`. on_step(step, loss) is called after every step.
    `config.out` must be new, empty or a training run (resumed) unless `overwrite`, which deletes the
    run's files there (checkpoints/, metrics.jsonl, train_config.json; nothing else) and starts over.
    Raises NonFiniteError (the last good checkpoint stays the latest) on a NaN / inf loss or gradient,
    ValueError for an `out` that is not a run, a changed config, or a run whose checkpoints are all damaged.
    """
    initialize_distributed()
    out = Path(config.out)
    mesh = training_mesh(config.mesh)  # checks the device count before anything is loaded
    check_out_dir(out, overwrite)
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        if jax.process_index() == 0:
            print(f"train: {message}", file=sys.stderr, flush=True)

    data_config = config.data_config()
    if tokenizer is None:
        from agentrm_jax.models import load_tokenizer

        tokenizer = load_tokenizer(resolve_model_path(config.model))
    train_examples = load_examples(config.train, data_config, tokenizer, field="train")
    if not train_examples:
        raise ValueError(f"TrainConfig.train: {config.train} holds no records")
    eval_examples = (load_examples(config.eval, data_config, tokenizer, field="eval") if config.eval else [])
    total_steps = _total_steps(config, len(train_examples))

    model, trainable_filter = build_model(config, backbone=backbone)
    step_fn = TrainStep(model, trainable_filter, config, mesh, total_steps)
    trainable = step_fn.initial_trainable
    opt_state = step_fn.init_opt_state(trainable)
    batches = TrainBatches(train_examples, data_config, process_index=jax.process_index(),
                           process_count=jax.process_count())

    if overwrite:
        if jax.process_index() == 0 and (cleared := clear_run(out)):
            note(cleared)
        _sync_hosts("agentrm_train_overwrite")
    checkpointer = Checkpointer(out / CHECKPOINTS, keep=config.keep)
    metrics_path = out / METRICS_FILE
    start, resumed_from = 0, None
    try:
        restored = _restore_newest_intact(checkpointer, {"params": trainable, "opt_state": opt_state}, config,
                                          out, note)
    except BaseException:
        checkpointer.close()
        raise
    if restored is not None:
        latest, state, data_state = restored
        trainable, opt_state = state["params"], state["opt_state"]
        batches.set_state(data_state)
        start = resumed_from = latest
        if jax.process_index() == 0:
            truncate_metrics(metrics_path, latest)
    if jax.process_index() == 0:
        if (renamed := write_train_config(out, config.to_dict())) is not None:
            note(renamed)
        if restored is None:
            metrics_path.write_text("")

    def save(step: int):
        checkpointer.save(step, {"params": trainable, "opt_state": opt_state}, data_state=batches.get_state(),
                          meta={"config": config.to_dict(), "step": step, "total_steps": total_steps})

    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start, desc=f"train {config.kind} RM", unit="step", dynamic_ncols=True)
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
            if step % config.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t0
                row = {"step": step, "loss": loss, "lr": learning_rate(config, total_steps, step - 1),
                       "grad_norm": float(metrics["grad_norm"]), "epoch": round(batches.epoch, 4),
                       "tokens_per_s": round(tokens_seen / elapsed, 1) if elapsed > 0 else None}
            if eval_examples and ((config.eval_every and step % config.eval_every == 0) or step == total_steps):
                last_eval = run_eval(step_fn, trainable, eval_examples, config)
                row = {**(row or {"step": step}), **last_eval}
            if row is not None:
                _append_metrics(metrics_path, row)
            if step % config.save_every == 0 or step == total_steps:
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
    """The model of a run's checkpoint (base reloaded from config.model, trainable weights restored)."""
    model, trainable_filter = build_model(config, backbone=backbone)
    graphdef, trainable, frozen = nnx.split(model, trainable_filter, ...)
    with Checkpointer(checkpoint_dir) as checkpointer:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                               sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                                trainable)
        tx = make_optimizer(config, 1)
        opt_abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
            jax.eval_shape(tx.init, trainable))
        state, _, meta = checkpointer.restore(step, {"params": abstract, "opt_state": opt_abstract})
    return nnx.merge(graphdef, state["params"], frozen), meta


def iterate_losses(path: str | Path) -> Iterator[tuple[int, float]]:
    """(step, loss) of every row of a metrics.jsonl that has a loss."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "loss" in row:
            yield row["step"], row["loss"]

