"""Interval statistics of the report: the Wilson interval of a success rate and the t interval of a mean.

Both come from `scipy.stats` (imported on first use: the report's other parts do not need it).
"""

from __future__ import annotations

import math

__all__ = ["t_interval", "t_quantile_975", "wilson_interval"]


def wilson_interval(successes: int, n: int, confidence_level: float = 0.95) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (fractions in [0, 1]); (nan, nan) for n = 0.

    `scipy.stats.binomtest(successes, n).proportion_ci(method="wilson")`, without continuity correction.
    """
    if n <= 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence_level, method="wilson")
    return float(ci.low), float(ci.high)


def t_quantile_975(df: int) -> float:
    """Student t 0.975 quantile (`scipy.stats.t.ppf`, exact: 12.7062 at df = 1); nan for df < 1."""
    if df < 1:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of its 95% t interval); half-width nan for fewer than two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, t_quantile_975(n - 1) * math.sqrt(var / n)
