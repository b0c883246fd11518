"""Means, standard deviations and 95% t-intervals of per-seed measurements (torch-free).

Shared by notebook 08's paired comparison (:mod:`kgdistill.study.equal_size`) and notebook 06's
DS − no-DS differences (:mod:`kgdistill.study.distile.claims`): :func:`mean_sd` and
:func:`t_interval` (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n, from the tabulated critical values :data:`T975`).
"""
from __future__ import annotations

import math
from typing import Sequence

#: two-sided 95% critical values of Student's t by degrees of freedom (beyond 30: the next lower
#: tabulated value, which is conservative)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` of ``values``; NaN mean for none, NaN sd for fewer than two."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its two-sided 95% t-interval
    (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n); the bounds are NaN with fewer than two values."""
    mean, sd = mean_sd(values)
    n = len(values)
    if n < 2:
        return mean, math.nan, math.nan
    t = T975[max(k for k in T975 if k <= n - 1)]
    return mean, mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n)
