"""Rank statistics for metric validity: AUC (Mann-Whitney), its interval, Spearman, Pearson.

All take NumPy arrays and return plain floats (``None`` when the figure is undefined: an
empty class, or a constant input). Ties get average ranks throughout.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from seamline.analytics.stats import Z95


def average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks; tied values share the mean of the ranks they span (``rankdata``)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = (ends - counts + 1 + ends) / 2.0
    ranks: NDArray[np.float64] = mean_rank[inverse.reshape(-1)]
    return ranks


def auc(values: NDArray[np.float64], positive: NDArray[np.bool_]) -> float | None:
    """P(a random positive scores higher than a random negative), ties counting one half.

    The Mann-Whitney U of the positives divided by ``n_pos * n_neg``.
    """
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = float(average_ranks(values)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def hanley_mcneil(area: float, n_pos: int, n_neg: int, z: float = Z95) -> tuple[float, float]:
    """95% interval of an AUC from Hanley & McNeil (1982), clipped to [0, 1].

    SE² = (A(1-A) + (n_pos-1)(Q1-A²) + (n_neg-1)(Q2-A²)) / (n_pos n_neg), with
    Q1 = A/(2-A) and Q2 = 2A²/(1+A) (the exponential approximation).
    """
    q1 = area / (2.0 - area)
    q2 = 2.0 * area * area / (1.0 + area)
    variance = (area * (1 - area) + (n_pos - 1) * (q1 - area * area)
                + (n_neg - 1) * (q2 - area * area)) / (n_pos * n_neg)  # fmt: skip
    half = z * math.sqrt(max(variance, 0.0))
    return max(0.0, area - half), min(1.0, area + half)


def pearson(x: NDArray[np.float64], y: NDArray[np.float64]) -> float | None:
    """Pearson correlation; ``None`` for fewer than 3 points or a constant side."""
    if len(x) < 3:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if denominator == 0:
        return None
    return float((dx * dy).sum()) / denominator


def spearman(x: NDArray[np.float64], y: NDArray[np.float64]) -> float | None:
    """Spearman rank correlation (Pearson over average ranks)."""
    if len(x) < 3:
        return None
    return pearson(average_ranks(x), average_ranks(y))
