"""The optimizer: global-norm clipping, then AdamW (decay on matrices only) with linear warmup and cosine
decay (`config.optimizer`).

    make_optimizer(config, total_steps) -> optax.GradientTransformation
    learning_rate(config, total_steps, step) -> the rate it applies at that update, for logs
"""

from __future__ import annotations

import jax
import optax

from agentrm_jax.training.config import TrainConfig

__all__ = ["learning_rate", "make_optimizer"]


def _schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to lr (none when the run is a single step), then cosine decay to lr * min_lr_ratio."""
    opt = config.optimizer
    warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else opt.lr, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=opt.lr * opt.min_lr_ratio)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Global-norm clip, then AdamW (decay on matrices only) with linear warmup and cosine decay."""
    opt = config.optimizer
    adamw = optax.adamw(_schedule(config, total_steps), b1=opt.b1, b2=opt.b2, eps=1e-8,
                        weight_decay=opt.weight_decay, mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))
    parts = ([optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []) + [adamw]
    return optax.chain(*parts)


def learning_rate(config: TrainConfig, total_steps: int, step: int) -> float:
    """The learning rate `make_optimizer` applies at (0-based) update `step`, for logs."""
    return float(_schedule(config, total_steps)(step))
