"""ISO-8601 parsing and Segment's clock-skew correction.

``timestamp = received_at - (sent_at - original_timestamp)`` when ``sentAt`` is present;
all values are stored as naive UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol


class InvalidTimestamp(ValueError):
    pass


# Far outside any real event; guards against epoch-0 and year-9999 placeholder values
# turning into nonsense journeys.
_EARLIEST = datetime(2000, 1, 1)
_LATEST = datetime(2200, 1, 1)


def parse_timestamp(value: Any, field: str) -> datetime | None:
    """Parse an ISO-8601 string (or a datetime) to naive UTC; None for absent values.

    >>> parse_timestamp("2026-11-23T10:00:00.123Z", "timestamp")
    datetime.datetime(2026, 11, 23, 10, 0, 0, 123000)
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parsed = _utc_text(value)
        if parsed is not None and _EARLIEST <= parsed < _LATEST:
            return parsed  # what SDKs send: UTC with a Z, seconds or milli/microseconds
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidTimestamp(
                f"{field} {value[:40]!r} is not an ISO-8601 date-time; "
                "send e.g. '2026-11-23T10:00:00.000Z'"
            ) from None
    else:
        raise InvalidTimestamp(
            f"{field} must be an ISO-8601 string, got {type(value).__name__}; "
            "send e.g. '2026-11-23T10:00:00.000Z'"
        )
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    if not _EARLIEST <= parsed < _LATEST:
        raise InvalidTimestamp(f"{field} {value!s:.40} is outside the years 2000-2199")
    return parsed


@lru_cache(maxsize=1024)  # a batch's sentAt repeats on every event
def _utc_text(value: str) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SS[.fff[fff]]Z`` as naive UTC, else None (the general parse)."""
    if len(value) not in (20, 24, 27) or value[10] != "T" or value[-1] != "Z":
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1])
    except ValueError:
        return None
    # "2026-11-23T10+00:01Z" is 20 characters too: an offset and a Z is the general parse's error
    return parsed if parsed.tzinfo is None else None


def corrected_timestamp(
    original: datetime | None, sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Segment's correction: the event happened ``sent_at - original`` before arrival."""
    if original is None:
        return received_at
    if sent_at is None:
        return original
    return received_at - (sent_at - original)


class TimeContext(Protocol):
    @property
    def keep_timestamps(self) -> bool: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def skew_flag_seconds(self) -> int: ...


def event_times(
    ctx: TimeContext,
    *,
    timestamp: Any,
    original: Any,
    own_sent_at: Any,
    batch_sent_at: Any,
    received_at: Any,
    ignore_sent_at: bool,
) -> tuple[datetime, datetime, datetime | None, datetime, bool]:
    """(timestamp, original_timestamp, sent_at, received_at, skew_flag) of one event.

    Imports (``keep_timestamps``) keep what the file says; live events are corrected for
    the device clock. Raises :class:`InvalidTimestamp` naming the field.
    """
    if ctx.keep_timestamps:
        stamp = parse_timestamp(timestamp, "timestamp")
        first = parse_timestamp(original, "originalTimestamp")
        sent = parse_timestamp(own_sent_at, "sentAt")
        received = parse_timestamp(received_at, "receivedAt") or ctx.received_at
        stamp = stamp or first or received
        return stamp, first or stamp, sent, received, False
    first = parse_timestamp(original, "originalTimestamp") or parse_timestamp(
        timestamp, "timestamp"
    )
    sent = parse_timestamp(own_sent_at if own_sent_at else batch_sent_at, "sentAt")
    received = ctx.received_at
    stamp = (first or received) if ignore_sent_at else corrected_timestamp(first, sent, received)
    skew = sent is not None and (
        ctx.retry_count > 0 or (received - sent).total_seconds() > ctx.skew_flag_seconds
    )
    return stamp, first or received, sent, received, skew


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()
