"""Validate and normalise raw Segment events into storage rows.

An event that fails a rule becomes a :class:`FailedEvent` with a reason code, the
field at fault and its raw JSON; the other events of the batch are unaffected.
Rules follow Segment's HTTP API (see ``shared/specs/segment-ingest.md`` §2):
``userId`` or ``anonymousId`` (empty or blank strings count as missing), ``event``
for track, ``groupId`` for group, ``userId`` and ``previousId`` for alias.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import msgspec
import pyarrow as pa

from seamline.events.columns import EVENT_COLUMNS, EVENTS_SCHEMA, ROW_COLUMNS
from seamline.events.fast import EVENT_TYPES, MAX_MESSAGE_ID, fast_row, identifier
from seamline.events.fast import text as _text
from seamline.events.timestamps import InvalidTimestamp, event_times, from_micros, to_micros

_json_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class IngestContext:
    """What the pipeline knows about a request besides its body."""

    source_id: str
    channel: str
    unit: str | None
    received_at: datetime
    client_ip: str | None = None
    fill_ip: bool = False  # browser and mobile routes: record the client address
    keep_timestamps: bool = False  # imports: no skew correction
    retry_count: int = 0
    skew_flag_seconds: int = 600

    @cached_property
    def received_micros(self) -> int:
        """``received_at`` as the rows carry it (microseconds since the epoch)."""
        return to_micros(self.received_at)


@dataclass
class FailedEvent:
    source_id: str | None
    message_id: str | None
    reason: str  # stable code, e.g. "no_user_anon_id"
    field: str | None
    message: str  # names the problem and the fix
    raw: str
    received_at: datetime


@dataclass
class EventRows:
    """Column-oriented accumulator: one list per column, cheap to turn into Arrow.

    The times (:data:`~seamline.events.columns.TIME_COLUMNS`) are integer microseconds
    since the epoch, naive UTC; :meth:`moment` reads one as a ``datetime``.
    """

    columns: dict[str, list[Any]] = field(
        default_factory=lambda: {name: [] for name in ROW_COLUMNS}
    )

    def __len__(self) -> int:
        return len(self.columns["message_id"])

    def append(self, row: dict[str, Any]) -> None:
        for name, values in self.columns.items():
            values.append(row.get(name))

    def to_arrow(self) -> pa.Table:
        """Every stored column as Arrow, in :data:`EVENTS_SCHEMA` order."""
        return pa.Table.from_pydict({name: self.columns[name] for name in EVENT_COLUMNS},
                                    schema=EVENTS_SCHEMA)  # fmt: skip

    @classmethod
    def from_tuples(cls, rows: list[tuple[Any, ...]]) -> EventRows:
        """Rows given as tuples in :data:`ROW_COLUMNS` order, transposed in one pass."""
        if not rows:
            return cls()
        return cls(dict(zip(ROW_COLUMNS, map(list, zip(*rows, strict=True)), strict=True)))

    def extend(self, other: EventRows) -> None:
        for name, values in self.columns.items():
            values.extend(other.columns[name])

    def moment(self, name: str, index: int) -> datetime | None:
        """The time column ``name`` of row ``index`` as a naive UTC ``datetime``."""
        micros = self.columns[name][index]
        return None if micros is None else from_micros(micros)

    def keys(self) -> list[tuple[str, str]]:
        return list(zip(self.columns["source_id"], self.columns["message_id"], strict=True))


class _Invalid(Exception):
    def __init__(self, reason: str, field: str | None, message: str):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


def _identifier(event: dict[str, Any], key: str) -> str | None:
    try:
        return identifier(event.get(key), key)
    except ValueError as exc:
        raise _Invalid("invalid_id", key, str(exc)) from None


def _object(event: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Invalid(
            "invalid_field", key, f"{key} must be a JSON object, got {type(value).__name__}"
        )
    return value


def _dig(context: dict[str, Any], section: str, key: str) -> str | None:
    part = context.get(section)
    return _text(part.get(key)) if isinstance(part, dict) else None


def _normalise_one(
    event: Any,
    *,
    forced_type: str | None,
    ctx: IngestContext,
    batch_sent_at: Any,
    batch_context: dict[str, Any],
    batch_integrations: dict[str, Any],
) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise _Invalid(
            "invalid_event", None, f"each event must be a JSON object, got {type(event).__name__}"
        )
    kind = forced_type or event.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise _Invalid(
            "invalid_type", "type",
            f"type must be one of {', '.join(EVENT_TYPES)}; got {kind!r}",
        )  # fmt: skip
    user_id = _identifier(event, "userId")
    anonymous_id = _identifier(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise _Invalid(
            "no_user_anon_id", "userId",
            "the event has neither userId nor anonymousId; set at least one",
        )  # fmt: skip
    message_id = _identifier(event, "messageId") or f"sl-{uuid.uuid4()}"
    if len(message_id) > MAX_MESSAGE_ID:
        raise _Invalid(
            "invalid_id", "messageId", f"messageId is longer than {MAX_MESSAGE_ID} characters"
        )
    properties = _object(event, "properties")
    traits = _object(event, "traits")
    own_context = _object(event, "context")
    own_integrations = _object(event, "integrations")
    metadata = _object(event, "_metadata")

    name = _text(event.get("name"))
    category = _text(event.get("category"))
    group_id = _identifier(event, "groupId")
    previous_id = _identifier(event, "previousId")
    if kind == "track":
        event_name = event.get("event")
        if not isinstance(event_name, str) or not event_name.strip():
            raise _Invalid("missing_event", "event", "a track call needs an 'event' name")
        event_name = event_name.strip()
    elif kind in ("page", "screen"):
        event_name = name
    else:
        event_name = None
    if kind == "group" and group_id is None:
        raise _Invalid("missing_group_id", "groupId", "a group call needs a groupId")
    if kind == "alias" and (previous_id is None or user_id is None):
        raise _Invalid(
            "missing_previous_id", "previousId", "an alias call needs both userId and previousId"
        )

    context = {**batch_context, **own_context} if own_context else dict(batch_context)
    integrations = (
        {**batch_integrations, **own_integrations} if own_integrations else batch_integrations
    )
    if ctx.client_ip and "ip" not in context and (ctx.fill_ip or context.get("direct") is True):
        context["ip"] = ctx.client_ip

    try:
        timestamp, original, sent_at, received, skew_flag = event_times(
            ctx,
            timestamp=event.get("timestamp"),
            original=event.get("originalTimestamp"),
            own_sent_at=event.get("sentAt"),
            batch_sent_at=batch_sent_at,
            received_at=event.get("receivedAt"),
            ignore_sent_at=context.get("ignoreSentAt") is True,
        )
    except InvalidTimestamp as exc:
        raise _Invalid("invalid_timestamp", str(exc).split(" ", 1)[0], str(exc)) from None

    # identify traits first, then context.traits (any call) -- the rebuild uses the same rule
    found = context.get("traits")
    context_traits: dict[str, Any] = found if isinstance(found, dict) else {}
    contact_source: dict[str, Any] = traits if kind == "identify" and traits else {}

    def contact(name: str) -> Any:
        own = contact_source.get(name)
        return own if own is not None else context_traits.get(name)

    channel = _text(context.get("channel")) or ctx.channel
    unit = _text(context.get("unit")) or ctx.unit
    return {
        "message_id": message_id,
        "source_id": ctx.source_id,
        "type": kind,
        "event": event_name,
        "name": name,
        "category": category,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "group_id": group_id,
        "previous_id": previous_id,
        "channel": channel,
        "unit": unit,
        "timestamp": timestamp,
        "original_timestamp": original,
        "sent_at": sent_at,
        "received_at": received,
        "os_name": _dig(context, "os", "name"),
        "os_version": _dig(context, "os", "version"),
        "app_name": _dig(context, "app", "name"),
        "app_version": _dig(context, "app", "version"),
        "app_build": _dig(context, "app", "build"),
        "device_id": _text(context["device"].get("id"))
        if isinstance(context.get("device"), dict)
        else None,
        "device_type": _dig(context, "device", "type"),
        "device_model": _dig(context, "device", "model"),
        "library_name": _dig(context, "library", "name"),
        "library_version": _dig(context, "library", "version"),
        "locale": _text(context.get("locale")),
        "timezone": _text(context.get("timezone")),
        "ip": _text(context.get("ip")),
        "user_agent": _text(context.get("userAgent")),
        "properties": _json_encode(properties).decode() if properties is not None else None,
        "traits": _json_encode(traits).decode() if traits is not None else None,
        "context": _json_encode(context).decode() if context else None,
        "integrations": _json_encode(integrations).decode() if integrations else None,
        "metadata": _json_encode(metadata).decode() if metadata is not None else None,
        "skew_flag": skew_flag,
        "retry_count": ctx.retry_count,
        "contact_email": contact("email"),
        "contact_phone": contact("phone"),
    }


def _raw_text(raw: bytes | Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    try:
        return _json_encode(raw).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(raw)


def normalise_events(
    events: list[bytes] | list[Any],
    ctx: IngestContext,
    *,
    forced_type: str | None = None,
    batch_sent_at: Any = None,
    batch_context: dict[str, Any] | None = None,
    batch_integrations: dict[str, Any] | None = None,
    fast: bool = True,
) -> tuple[EventRows, list[FailedEvent]]:
    """Normalise raw events (JSON bytes or already-decoded objects).

    Returns the good rows and the failed events; never raises for one bad event.
    Well-formed events take :func:`~seamline.events.fast.fast_row` unless ``fast`` is
    False (the tests compare both paths).
    """
    tuples: list[tuple[Any, ...]] = []
    failed: list[FailedEvent] = []
    plain = fast and not batch_context and not batch_integrations
    for raw in events:
        if plain and isinstance(raw, bytes):
            quick = fast_row(raw, ctx, forced_type, batch_sent_at)
            if quick is not None:
                tuples.append(quick)
                continue
        decoded: Any = raw
        try:
            if isinstance(raw, bytes):
                try:
                    decoded = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:  # pragma: no cover - outer parse caught it
                    message = f"event is not valid JSON: {exc}"
                    raise _Invalid("invalid_json", None, message) from None
            row = _normalise_one(
                decoded,
                forced_type=forced_type,
                ctx=ctx,
                batch_sent_at=batch_sent_at,
                batch_context=batch_context or {},
                batch_integrations=batch_integrations or {},
            )
        except (_Invalid, RecursionError) as exc:
            problem = exc
            if isinstance(problem, RecursionError):  # deeper than the JSON codec goes
                problem = _Invalid("too_deep", None, "the event is nested too deeply; flatten it")
            message_id = decoded.get("messageId") if isinstance(decoded, dict) else None
            failed.append(
                FailedEvent(
                    source_id=ctx.source_id,
                    message_id=message_id if isinstance(message_id, str) else None,
                    reason=problem.reason,
                    field=problem.field,
                    message=problem.message,
                    raw=_raw_text(raw),
                    received_at=ctx.received_at,
                )
            )
            continue
        tuples.append(tuple(row.get(name) for name in ROW_COLUMNS))
    return EventRows.from_tuples(tuples), failed
