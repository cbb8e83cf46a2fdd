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
