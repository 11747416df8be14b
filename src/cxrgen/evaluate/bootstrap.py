"""Paired bootstrap over studies: confidence intervals and p-values from one set of resamples.

A resample is a weight vector (how often each study was drawn), so any metric written as a
function of weighted per-sample statistics is evaluated on all resamples at once. Every system is
scored on the same resamples, which makes the system comparisons paired.
"""
from __future__ import annotations

import numpy as np


def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) multiplicities of n studies drawn with replacement, n_boot times."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.arange(n_boot)[:, None], idx), 1.0)
    return weights


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value for "a and b score the same", from paired bootstrap values of each.

    The share of resamples where the difference a - b falls on either side of 0, doubled (the
    percentile test); +1 in numerator and denominator so a p-value is never exactly 0.
    """
    diff = np.asarray(a) - np.asarray(b)
    n = len(diff)
    below = (np.sum(diff <= 0) + 1) / (n + 1)
    above = (np.sum(diff >= 0) + 1) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))
