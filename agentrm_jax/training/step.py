"""`TrainStep`: the sharded, jitted train and eval steps of one model on one (data, fsdp, tensor) mesh.

Parameters are placed by the logical-axis rules of `models.sharding`, batches split over data x fsdp,
gradient accumulation by `lax.scan` over interleaved micro-batches; the step has no random ops.

Everything the step reads is an argument of the jitted function, never a closed-over array: a
closed-over array is compiled into the program as a constant (unsharded, copied into the executable).
That matters for the implicit PRM under full fine-tuning, whose reference pi_ref is a frozen copy of
the initial weights: it is passed as `reference`, placed like the trained weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from agentrm_jax.models.sharding import ShardingPlan, param_shardings
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.losses import loss_sums, valid_rows
from agentrm_jax.training.optimizer import make_optimizer

__all__ = ["TrainStep", "step_loss"]


def _micro_batches(x: jax.Array, accum: int, unit: int) -> jax.Array:
    """[R, ...] -> [accum, R / accum, ...], micro-batch a = units i * accum + a.

    Interleaving keeps every device's contiguous shard of rows contributing to every micro-batch
    (no data moves between devices), and `unit` rows (2 for pairs) stay together.
    """
    rows = x.shape[0]
    x = x.reshape(rows // (unit * accum), accum, unit, *x.shape[1:])
    x = jnp.moveaxis(x, 1, 0)
    return x.reshape(accum, rows // accum, *x.shape[3:])


def reference_logits(graphdef, config: TrainConfig, trainable, frozen, reference):
    """`(ids, mask) -> pi_ref logits` for the implicit PRM (traced inside the step), None otherwise:
    `reference` (the initial weights under full fine-tuning) or, when None (LoRA), the same weights
    with the adapters zeroed."""
    if config.kind != "implicit":
        return None
    if reference is None:
        reference = jax.tree.map(jnp.zeros_like, trainable)
    ref_model = nnx.merge(graphdef, reference, frozen)
    return lambda ids, mask: ref_model(ids, mask)


def step_loss(graphdef, config: TrainConfig, trainable, frozen, reference, batch, count) -> jax.Array:
    """The loss one (micro-)batch contributes to a step: sum over its valid rows / `count` (the
    step's valid rows), for `jax.value_and_grad` over `trainable`. Pure; see `TrainStep`."""
    model = nnx.merge(graphdef, trainable, frozen)
    objective = config.objective
    total, _, _ = loss_sums(model, batch, kind=config.kind, loss=objective.loss, beta=objective.beta,
                            margin=objective.margin,
                            reference=reference_logits(graphdef, config, trainable, frozen, reference))
    return total / count


class TrainStep:
    """The sharded, jitted train and eval steps of one model on one mesh.

    state: `trainable` (nnx.State of the parameters being trained) and `opt_state`; the frozen
    rest of the model is held here, and so is `reference`: for the implicit PRM under full
    fine-tuning the initial trainable weights (an nnx.State like `trainable`, same shardings), else
    None (under LoRA pi_ref is the same weights with the adapters zeroed, built inside the step).
    `step(trainable, opt_state, batch) -> (trainable, opt_state, metrics)` donates its state;
    `evaluate(trainable, batch) -> (loss sum, count, scores)`; `lower_step(...)` lowers the step.
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
        self.reference = self._initial_reference(trainable)
        ref_shardings = None if self.reference is None else self.trainable_shardings
        self._step = jax.jit(self._step_fn, donate_argnums=(0, 1),
                             in_shardings=(self.trainable_shardings, self.opt_shardings, None, ref_shardings,
                                           self.batch_sharding),
                             out_shardings=(self.trainable_shardings, self.opt_shardings, replicated))
        self._eval = jax.jit(self._eval_fn, in_shardings=(self.trainable_shardings, None, ref_shardings,
                                                          self.batch_sharding),
                             out_shardings=replicated)
        self._init_opt = jax.jit(self.tx.init, out_shardings=self.opt_shardings)

    def init_opt_state(self, trainable):
        return self._init_opt(trainable)

    def _initial_reference(self, trainable):
        """The implicit PRM's pi_ref weights under full fine-tuning: a copy of the initial trainable
        state on the same shardings (the step donates `trainable`, so it cannot be that state itself);
        None for every other run."""
        if self.config.kind != "implicit" or self.config.finetune == "lora":
            return None
        return jax.tree.map(lambda x: x.copy(), trainable)

    def _loss(self, trainable, frozen, reference, batch, count):
        return step_loss(self.graphdef, self.config, trainable, frozen, reference, batch, count)

    def _count(self, batch):
        return jnp.maximum(jnp.sum(valid_rows(batch, self.config.kind)), 1).astype(jnp.float32)

    def _step_fn(self, trainable, opt_state, frozen, reference, batch):
        accum = self.config.optimizer.grad_accum
        count = self._count(batch)
        grad_fn = jax.value_and_grad(self._loss)
        if accum == 1:
            loss, grads = grad_fn(trainable, frozen, reference, batch, count)
        else:
            unit = 2 if self.config.kind == "pairwise" else 1
            micro = jax.tree.map(lambda x: _micro_batches(x, accum, unit), batch)

            def one(carry, mb):
                loss_acc, grad_acc = carry
                loss_mb, grads_mb = grad_fn(trainable, frozen, reference, mb, count)
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

    def _eval_fn(self, trainable, frozen, reference, batch):
        model = nnx.merge(self.graphdef, trainable, frozen)
        objective = self.config.objective
        total, count, scores = loss_sums(model, batch, kind=self.config.kind, loss=objective.loss,
                                         beta=objective.beta, margin=objective.margin,
                                         reference=reference_logits(self.graphdef, self.config, trainable, frozen,
                                                                    reference))
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
        return self._step(trainable, opt_state, self.frozen, self.reference, batch)

    def lower_step(self, trainable, opt_state, batch) -> jax.stages.Lowered:
        """The train step lowered for these arguments (arrays or jax.ShapeDtypeStructs): `.as_text()`
        is its StableHLO, `.compile().memory_analysis()` its buffer sizes. Nothing is donated or run."""
        return self._step.lower(trainable, opt_state, self.frozen, self.reference, batch)

    def evaluate(self, trainable, batch):
        return self._eval(trainable, self.frozen, self.reference, batch)

    def compile_count(self) -> int:
        """Distinct train-step programs compiled so far (one per length bucket)."""
        return self._step._cache_size()
