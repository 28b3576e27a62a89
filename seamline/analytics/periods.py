"""Calendar periods over microsecond timestamps: UTC days and ISO weeks (Monday first).

A period is an integer index, so "the same period" and "k periods later" are integer
comparisons in the kernels; :func:`period_label` turns an index back into its first day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

_DAY_US = 86_400_000_000
_EPOCH = date(1970, 1, 1)
# 1970-01-01 was a Thursday: day d lies in the week starting on day 7 * ((d + 3) // 7) - 3.
_THURSDAY_TO_MONDAY = 3


def period_index(ts_us: NDArray[np.int64], period: str) -> NDArray[np.int64]:
    """The day or week number of each timestamp (floor division, so older dates work too)."""
    days = np.floor_divide(ts_us, _DAY_US)
    if period == "day":
        return days
    return np.floor_divide(days + _THURSDAY_TO_MONDAY, 7)


def period_of(moment: datetime, period: str) -> int:
    """:func:`period_index` of one naive-UTC datetime."""
    us = (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    return int(period_index(np.array([us], dtype=np.int64), period)[0])


def period_start(index: int, period: str) -> date:
    days = index if period == "day" else index * 7 - _THURSDAY_TO_MONDAY
    return _EPOCH + timedelta(days=days)


def period_label(index: int, period: str) -> str:
    """The period's first day, ``"2026-11-02"`` (a Monday for weeks)."""
    return period_start(index, period).isoformat()
