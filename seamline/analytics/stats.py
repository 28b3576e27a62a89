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
