"""Means over seeds with Student-t confidence intervals, and paired differences.

A table row trained with n seeds reports ``mean +- t_{(1+level)/2, n-1} s / sqrt(n)``
(s the sample standard deviation). Two rows trained with the same seeds
(same initialisation of the shared layers and same data order) are compared
seed by seed: the interval of the mean paired difference is much narrower
than the two rows' intervals suggest when the seeds move both rows alike.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence


def _t_cdf_above_half(x: float, df: float, intervals: int = 2000) -> float:
    """P(T <= x) - 1/2 for x >= 0: Simpson's rule over [0, x] of the t density."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    h = x / intervals
    total = 0.0
    for i in range(intervals + 1):
        weight = 1 if i in (0, intervals) else (4 if i % 2 else 2)
        total += weight * math.exp(log_c - (df + 1) / 2 * math.log1p((i * h) ** 2 / df))
    return total * h / 3


@functools.lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (0.5 < p < 1), to about 1e-9."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf_above_half(hi, df) < p - 0.5:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_above_half(mid, df) < p - 0.5 else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the ``level`` t-interval); the half-width is NaN for fewer than two values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)


def paired_difference(values: Sequence[float], reference: Sequence[float],
                      level: float = 0.95) -> tuple[float, float]:
    """``mean_interval`` of values[i] - reference[i] over the pairs where both are finite."""
    if len(values) != len(reference):
        raise ValueError(f"paired_difference needs pairs: {len(values)} values, {len(reference)} references")
    diffs = [v - r for v, r in zip(values, reference)
             if v is not None and r is not None and math.isfinite(v) and math.isfinite(r)]
    return mean_interval(diffs, level)
