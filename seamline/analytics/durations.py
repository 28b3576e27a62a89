"""Durations written as people write them: ``90s``, ``10m``, ``2h``, ``7d``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

from seamline.errors import BadRequest

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str | timedelta, field: str = "within") -> timedelta:
    """``"7d"`` -> ``timedelta(days=7)``; a clear error names the field and the form.

    >>> parse_duration("2h")
    datetime.timedelta(seconds=7200)
    """
    if isinstance(text, timedelta):
        return text
    match = _PATTERN.match(str(text).lower())
    if not match:
        raise BadRequest(
            f"{field} {text!r} is not a duration; write a number and a unit, "
            "e.g. 90s, 10m, 2h, 7d or 2w.",
            code="invalid_duration",
        )
    try:
        value = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        raise BadRequest(f"{field} {text!r} is too long.", code="invalid_duration") from None
    if value <= timedelta(0):
        raise BadRequest(f"{field} must be longer than zero.", code="invalid_duration")
    return value


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
