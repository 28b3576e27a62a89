"""ISO-8601 parsing and Segment's clock-skew correction.

``timestamp = received_at - (sent_at - original_timestamp)`` when ``sentAt`` is present;
all values are stored as naive UTC. Normalised rows carry them as integer microseconds
since the epoch (:func:`to_micros`): an integer costs a tenth of a ``datetime`` to pickle
(the parse workers' answers) and to turn into Arrow (the writer's insert, the serial part
of ingest). :func:`from_micros` gives the ``datetime`` back where one is wanted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar


class InvalidTimestamp(ValueError):
    pass


# Far outside any real event; guards against epoch-0 and year-9999 placeholder values
# turning into nonsense journeys.
_EARLIEST = datetime(2000, 1, 1)
_LATEST = datetime(2200, 1, 1)
EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """A ``datetime`` (naive is UTC) as integer microseconds since the epoch.

    >>> to_micros(datetime(1970, 1, 1, 0, 0, 1, 5))
    1000005
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """Microseconds since the epoch as a naive UTC ``datetime`` (the inverse of
    :func:`to_micros`)."""
    return EPOCH + timedelta(microseconds=micros)


_EARLIEST_US = to_micros(_EARLIEST)
_LATEST_US = to_micros(_LATEST)


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


def parse_micros(value: Any, field: str) -> int | None:
    """:func:`parse_timestamp` as microseconds since the epoch."""
    if value is None:
        return None
    if type(value) is str:
        parsed = _utc_text(value)
        if parsed is not None:  # what SDKs send
            micros = (parsed - EPOCH) // _MICROSECOND
            if _EARLIEST_US <= micros < _LATEST_US:
                return micros
    moment = parse_timestamp(value, field)
    return None if moment is None else to_micros(moment)


def _batch_micros(value: Any, field: str) -> int | None:
    """:func:`parse_micros` for a value every event of a batch repeats (its ``sentAt``)."""
    if type(value) is not str:
        return parse_micros(value, field)
    micros = _MICROS.get(value)
    if micros is None:
        micros = parse_micros(value, field)
        if micros is not None:
            if len(_MICROS) >= _MICROS_MAX:
                _MICROS.clear()
            _MICROS[value] = micros
    return micros


#: batch ``sentAt`` texts already parsed; cleared when full
_MICROS: dict[str, int] = {}
_MICROS_MAX = 1024


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


Moment = TypeVar("Moment", datetime, int)  # a datetime, or microseconds since the epoch


def corrected_timestamp(
    original: Moment | None, sent_at: Moment | None, received_at: Moment
) -> Moment:
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
    def received_micros(self) -> int: ...
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
) -> tuple[int, int, int | None, int, bool]:
    """(timestamp, original_timestamp, sent_at, received_at, skew_flag) of one event, the
    times as microseconds since the epoch (:func:`to_micros`).

    Imports (``keep_timestamps``) keep what the file says; live events are corrected for
    the device clock. Raises :class:`InvalidTimestamp` naming the field. (Each ``or``
    below takes a parsed time as present: none is 0, only the years 2000-2199 are valid.)
    """
    if ctx.keep_timestamps:
        stamp = parse_micros(timestamp, "timestamp")
        first = parse_micros(original, "originalTimestamp")
        sent = parse_micros(own_sent_at, "sentAt")
        received = parse_micros(received_at, "receivedAt") or ctx.received_micros
        stamp = stamp or first or received
        return stamp, first or stamp, sent, received, False
    first = parse_micros(original, "originalTimestamp") or parse_micros(timestamp, "timestamp")
    sent = (parse_micros(own_sent_at, "sentAt") if own_sent_at
            else _batch_micros(batch_sent_at, "sentAt"))  # fmt: skip
    received = ctx.received_micros
    stamp = (first or received) if ignore_sent_at else corrected_timestamp(first, sent, received)
    skew = sent is not None and (
        ctx.retry_count > 0 or received - sent > ctx.skew_flag_seconds * 1_000_000
    )
    return stamp, first or received, sent, received, skew


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()
