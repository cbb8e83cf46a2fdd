"""Evaluation metrics of a reward model: loss always; MSE, accuracy and AUROC (by `scipy.stats`) where
they apply; the fraction of pairs ranked right for pairwise. `run_eval` computes them over an eval set.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agentrm_jax.rewards.explicit import score_transform
from agentrm_jax.training.config import TrainConfig
from agentrm_jax.training.data import eval_batches
from agentrm_jax.training.step import TrainStep

__all__ = ["auroc", "eval_metrics", "run_eval"]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count half); nan if one class is absent."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # here, not at the top: only evaluation needs scipy

    ranks = rankdata(scores)  # 1-based, ties get their average rank
    # Mann-Whitney U of the positives over (positives x negatives)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def eval_metrics(config: TrainConfig, scores: np.ndarray, batches_targets: np.ndarray, labels: np.ndarray,
                 loss: float) -> dict[str, float]:
    """Eval metrics from the real rows' scores: loss always; explicit: MSE (of the score transform) and,
    for binary targets, accuracy at 0.5 and AUROC; implicit: accuracy (r > 0 vs label) and AUROC;
    pairwise: the fraction of pairs ranked right."""
    out = {"eval_loss": float(loss)}
    if config.kind == "explicit":
        pred = np.asarray(score_transform(config.objective.loss)(jnp.asarray(scores)))
        out["eval_mse"] = float(np.mean((pred - batches_targets) ** 2))
        if np.all(np.isin(batches_targets, (0.0, 1.0))):
            out["eval_accuracy"] = float(np.mean((pred > 0.5) == (batches_targets > 0.5)))
            out["eval_auroc"] = auroc(pred, batches_targets)
    elif config.kind == "sft":  # the loss is the metric (mean target-token cross-entropy per demo)
        pass
    elif config.kind == "implicit":
        out["eval_accuracy"] = float(np.mean((scores > 0) == (labels > 0.5)))
        out["eval_auroc"] = auroc(scores, labels > 0.5)
    else:
        out["eval_pair_accuracy"] = float(np.mean(scores[0::2] > scores[1::2]))
    return out


def run_eval(step_fn: TrainStep, trainable, examples, config: TrainConfig) -> dict[str, float]:
    """Loss and metrics of `examples` under the current parameters (every example exactly once)."""
    total, count = 0.0, 0.0
    scores, targets, labels = [], [], []
    for batch in eval_batches(examples, config.data, process_index=jax.process_index(),
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
