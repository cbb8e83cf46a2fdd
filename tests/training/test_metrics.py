"""Eval metrics: AUROC (rank-based, by scipy.stats) against counting the ranked pairs by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agentrm_jax.training.metrics import auroc


def pair_count_auroc(scores, labels) -> float:
    """P(score of a positive > score of a negative), ties counting half, by enumerating every pair."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_fraction_of_pairs_ranked_right(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=40).astype(float)  # many ties
    labels = rng.random(40) < 0.4
    assert auroc(scores, labels) == pytest.approx(pair_count_auroc(scores, labels), abs=1e-12)


def test_auroc_extremes_and_one_class():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert math.isnan(auroc([0.1, 0.2], [1, 1])) and math.isnan(auroc([0.1, 0.2], [0, 0]))


def test_a_train_result_states_its_loss_trend():
    from pathlib import Path

    from agentrm_jax.training.trainer import TrainResult

    result = TrainResult(out=Path("r"), step=3, losses={3: 0.5, 1: 2.0, 2: 1.0}, eval={}, resumed_from=None)
    assert result.loss_trend() == "loss 2.00 -> 0.50" and result.loss_trend(3) == "loss 2.000 -> 0.500"
    done = TrainResult(out=Path("r"), step=3, losses={}, eval={}, resumed_from=3, last_loss=0.25)
    assert done.loss_trend() == "last loss 0.25"
