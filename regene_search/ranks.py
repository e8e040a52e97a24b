"""Rank correlation in numpy: Kendall's tau-b and Spearman's rho (scipy is only a test dependency).

Both take two equal-length 1-d sequences and return NaN where the statistic is undefined, as
scipy does: fewer than two values, a NaN anywhere, or either input constant (no untied pair).
Written for the handful of encoders a run promotes; Kendall's tau is O(n^2) in time and memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (scipy's `rankdata(method='average')`)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Start of each run of equal values in sorted order; a tie group spans [start, next start).
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y)."""
    a, b = _pair(x, y)
    if a is None:
        return float("nan")
    sx = np.sign(a[:, None] - a[None, :])
    sy = np.sign(b[:, None] - b[None, :])
    untied_x, untied_y = np.sum(sx * sx), np.sum(sy * sy)
    if untied_x == 0 or untied_y == 0:
        return float("nan")
    # Each pair appears twice in the full matrices, in numerator and denominator alike.
    return float(np.clip(np.sum(sx * sy) / np.sqrt(untied_x * untied_y), -1.0, 1.0))


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (ties handled)."""
    a, b = _pair(x, y)
    if a is None:
        return float("nan")
    ra, rb = average_ranks(a) - (len(a) + 1) / 2.0, average_ranks(b) - (len(b) + 1) / 2.0
    denominator = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    if denominator == 0:
        return float("nan")
    return float(np.clip(np.sum(ra * rb) / denominator, -1.0, 1.0))


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if len(a) != len(b):
        raise ValueError(f"rank correlation needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2 or np.isnan(a).any() or np.isnan(b).any():
        return None, None
    return a, b
