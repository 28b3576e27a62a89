"""Small statistics shared by the analyses: intervals and quantiles, stated precisely."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for a proportion (95% by default); ``(None, None)`` for 0 trials."""
    if trials <= 0:
        return None, None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def quantiles(values: NDArray[np.float64]) -> tuple[float | None, float | None]:
    """Median and 90th percentile, linearly interpolated (DuckDB's ``quantile_cont``)."""
    if len(values) == 0:
        return None, None
    median, p90 = np.quantile(values, [0.5, 0.9])
    return float(median), float(p90)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_p(x1: int, n1: int, x0: int, n0: int, alternative: str = "greater") -> float:
    """One-sided Fisher exact test of p1 > p0 (or p1 < p0 with ``"less"``).

    Exact, so small counts and zero baselines give honest p-values (a z-test does not).
    """
    if n1 == 0 or n0 == 0:
        return 1.0
    from scipy.stats import fisher_exact  # imported here: scipy.stats costs ~1 s at startup

    table = [[x1, n1 - x1], [x0, n0 - x0]]
    return float(fisher_exact(table, alternative=alternative).pvalue)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted q-values, in the input order."""
    count = len(p_values)
    if not count:
        return []
    order = sorted(range(count), key=lambda i: p_values[i])
    q = [0.0] * count
    running = 1.0
    for rank in range(count, 0, -1):
        index = order[rank - 1]
        running = min(running, p_values[index] * count / rank)
        q[index] = running
    return q
