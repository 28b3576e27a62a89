"""How numbers read on the dashboard: durations, rates and counts (Jinja filters too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

DASH = "\u2013"  # an en dash: no value


def duration(seconds: float | None) -> str:
    """``95 -> '1.6 min'``: the unit a person would say, with two significant digits."""
    if seconds is None:
        return DASH
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if abs(seconds) < limit:
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    days = seconds / 86400
    return f"{days:.0f} d" if days >= 10 else f"{days:.1f} d"


def percent(value: float | None, digits: int = 1) -> str:
    if value is None:
        return DASH
    return f"{value * 100:.{digits}f}%"


def number(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def when(value: str | datetime | None) -> str:
    """ISO time as ``2026-11-23 09:31:25`` (UTC, seconds)."""
    if value is None:
        return DASH
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("T", " ")[:19]


FILTERS = {"duration": duration, "percent": percent, "number": number, "when": when}
