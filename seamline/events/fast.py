"""The fast path of normalisation: well-formed events decoded straight into a row tuple.

Most traffic is SDK-made and well formed. For it, :func:`fast_row` decodes each event into
typed structs, keeps ``properties``, ``traits``, ``context``, ``integrations`` and
``_metadata`` as the raw JSON text they arrived as (no decode and re-encode), and returns
the row as a tuple in :data:`~seamline.events.columns.ROW_COLUMNS` order.

Anything unusual (a field of an unexpected type, a rule broken, a bad timestamp) returns
``None``, and :func:`seamline.events.normalise.normalise_events` takes its general path,
which gives the precise failure. Both paths store the same values; only the JSON text may
differ in key order and spacing (``tests/test_events.py`` checks they agree).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from seamline.events.timestamps import InvalidTimestamp, event_times

if TYPE_CHECKING:
    from seamline.events.normalise import IngestContext

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_ID_LENGTH = 1024
MAX_MESSAGE_ID = 255

_Scalar = str | int | float | None
_NONE = msgspec.Raw()
_encode = msgspec.json.Encoder().encode


def text(value: Any) -> str | None:
    """A text column: strings as sent, numbers as text, empty and other types absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def identifier(value: Any, key: str) -> str | None:
    """Segment ids: null, "" and blanks are absent; numbers become strings.

    Raises ``ValueError`` with the message for a boolean, an object or an over-long id.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a string, got a boolean")
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{key} is longer than {MAX_ID_LENGTH} characters")
    return value


class _Section(msgspec.Struct):
    """``context.os``, ``.app``, ``.device`` and ``.library``: the parts we keep as columns."""

    name: _Scalar = None
    version: _Scalar = None
    build: _Scalar = None
    id: _Scalar = None
    type: _Scalar = None
    model: _Scalar = None


class _Contact(msgspec.Struct):
    email: Any = None
    phone: Any = None


class _Context(msgspec.Struct):
    os: _Section | None = None
    app: _Section | None = None
    device: _Section | None = None
    library: _Section | None = None
    locale: _Scalar = None
    timezone: _Scalar = None
    ip: Any = msgspec.UNSET
    userAgent: _Scalar = None
    channel: _Scalar = None
    unit: _Scalar = None
    traits: _Contact | None = None
    ignoreSentAt: Any = None
    direct: Any = None


class _Event(msgspec.Struct):
    type: str | None = None
    event: str | None = None
    name: _Scalar = None
    category: _Scalar = None
    userId: _Scalar = None
    anonymousId: _Scalar = None
    messageId: _Scalar = None
    groupId: _Scalar = None
    previousId: _Scalar = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    receivedAt: str | None = None
    properties: msgspec.Raw = _NONE
    traits: msgspec.Raw = _NONE
    context: msgspec.Raw = _NONE
    integrations: msgspec.Raw = _NONE
    metadata: msgspec.Raw = msgspec.field(default=_NONE, name="_metadata")


_event_decoder = msgspec.json.Decoder(_Event)
_context_decoder = msgspec.json.Decoder(_Context)
_contact_decoder = msgspec.json.Decoder(_Contact)
_EMPTY_SECTION = _Section()
_NO_CONTACT = _Contact()  # read only


class _ContextColumns(NamedTuple):
    """What an event's ``context`` gives its row, decided once per distinct context text."""

    text: str | None  # the stored JSON text (with ``ip`` filled in), None when empty
    ignore_sent_at: bool
    email: Any  # context.traits' email and phone, before an identify's own traits
    phone: Any
    channel: str | None
    unit: str | None
    described: tuple[str | None, ...]  # os_name ... user_agent, as in ROW_COLUMNS (with ip)


#: Context texts already decoded (with the request's ip filling): the events of one device
#: share their context, about 6 distinct ones per 100-event batch in the ingest bench. Each
#: hit reuses the same ``str`` objects, which pickle (the parse workers' answers) then
#: sends once. Cleared when full.
_CONTEXTS: dict[tuple[bytes, str | None, bool], _ContextColumns] = {}
_CONTEXTS_MAX = 1024
_CONTEXT_MAX_BYTES = 4096  # larger ones are decoded each time: the memo stays a few MB


#: Texts that repeat across events (ids, event names, ``_metadata``): one ``str`` object
#: per distinct text, so that pickle sends it once per answer of a parse worker and the
#: server unpickles one object instead of one per event. Cleared when full.
_SHARED: dict[str, str] = {}
_SHARED_MAX = 4096
#: the event types, as the one object each
_KINDS = {kind: kind for kind in EVENT_TYPES}


def _share(value: str | None) -> str | None:
    if value is None:
        return None
    shared = _SHARED.get(value)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        shared = _SHARED[value] = value
    return shared


class _Unusual(Exception):
    """Not for the fast path: the general path decides."""


def _object_text(raw: msgspec.Raw | bytes) -> str | None:
    """The JSON text of an object field; None when absent or null."""
    if raw is _NONE:  # absent: the decoder left the default in place
        return None
    data = bytes(raw)
    if not data or data == b"null":
        return None
    if data[:1] != b"{":
        raise _Unusual
    return data.decode()


def _is_empty(data: str) -> bool:
    return data[1:].lstrip()[:1] == "}"


def _id(value: _Scalar, key: str) -> str | None:
    if value is None:
        return None
    if (type(value) is str and value and len(value) <= MAX_ID_LENGTH
            and not value[0].isspace() and not value[-1].isspace()):  # fmt: skip
        return value  # what identifier() gives an id as SDKs send it, without the checks
    try:
        return identifier(value, key)
    except ValueError:
        raise _Unusual from None


def fast_row(raw: bytes, ctx: IngestContext, forced_type: str | None = None,
             batch_sent_at: Any = None) -> tuple[Any, ...] | None:  # fmt: skip
    """The row of one well-formed event, or None to take the general path."""
    try:
        return _row(raw, ctx, forced_type, batch_sent_at)
    except (_Unusual, msgspec.MsgspecError, InvalidTimestamp, RecursionError):
        return None


def _row(raw: bytes, ctx: IngestContext, forced_type: str | None,
         batch_sent_at: Any) -> tuple[Any, ...]:  # fmt: skip
    event = _event_decoder.decode(raw)
    kind = _KINDS.get(forced_type or event.type)  # type: ignore[arg-type]
    if kind is None:
        raise _Unusual
    user_id = _share(_id(event.userId, "userId"))
    anonymous_id = _share(_id(event.anonymousId, "anonymousId"))
    if user_id is None and anonymous_id is None:
        raise _Unusual
    message_id = _id(event.messageId, "messageId") or f"sl-{uuid.uuid4()}"
    if len(message_id) > MAX_MESSAGE_ID:
        raise _Unusual
    group_id = _id(event.groupId, "groupId")
    previous_id = _id(event.previousId, "previousId")
    name = _share(text(event.name))
    if kind == "track":
        event_name = _share(event.event.strip()) if event.event else None
        if not event_name:
            raise _Unusual
    elif kind in ("page", "screen"):
        event_name = name
    else:
        event_name = None
    if (kind == "group" and group_id is None) or (
        kind == "alias" and (previous_id is None or user_id is None)
    ):
        raise _Unusual

    properties = _object_text(event.properties)
    traits = _object_text(event.traits)
    integrations = _object_text(event.integrations)
    metadata = _share(_object_text(event.metadata))
    if integrations is not None and _is_empty(integrations):
        integrations = None
    key = (bytes(event.context), ctx.client_ip, ctx.fill_ip)
    context = _CONTEXTS.get(key)
    if context is None:
        context = _context_columns(key[0], ctx)  # the bytes the key already copied
        if len(key[0]) <= _CONTEXT_MAX_BYTES:
            if len(_CONTEXTS) >= _CONTEXTS_MAX:
                _CONTEXTS.clear()
            _CONTEXTS[key] = context

    timestamp, original, sent_at, received, skew_flag = event_times(
        ctx,
        timestamp=event.timestamp,
        original=event.originalTimestamp,
        own_sent_at=event.sentAt,
        batch_sent_at=batch_sent_at,
        received_at=event.receivedAt,
        ignore_sent_at=context.ignore_sent_at,
    )

    own = _contact_decoder.decode(traits) if kind == "identify" and traits else _NO_CONTACT
    email = own.email if own.email is not None else context.email
    phone = own.phone if own.phone is not None else context.phone
    # the order of ROW_COLUMNS (seamline.events.columns)
    return (
        message_id, ctx.source_id, kind, event_name, name, text(event.category),
        user_id, anonymous_id, group_id, previous_id, None,
        context.channel or ctx.channel, context.unit or ctx.unit,
        timestamp, original, sent_at, received,
        *context.described,
        properties, traits, context.text, integrations, metadata,
        skew_flag, ctx.retry_count,
        email, phone,
    )  # fmt: skip


def _context_columns(raw: bytes, ctx: IngestContext) -> _ContextColumns:
    """Decode one context (raises like the rest of the fast path when it is unusual)."""
    context_text = _object_text(raw)
    context = _context_decoder.decode(context_text) if context_text else _Context()
    if context_text is not None and _is_empty(context_text):
        context_text = None
    ip = context.ip
    if ip is msgspec.UNSET:
        ip = None
        if ctx.client_ip and (ctx.fill_ip or context.direct is True):
            ip = ctx.client_ip
            quoted = _encode(ip).decode()
            context_text = (f'{{"ip":{quoted},{context_text.lstrip()[1:]}' if context_text
                            else f'{{"ip":{quoted}}}')  # fmt: skip
    shared = context.traits or _NO_CONTACT
    os, app = context.os or _EMPTY_SECTION, context.app or _EMPTY_SECTION
    device, library = context.device or _EMPTY_SECTION, context.library or _EMPTY_SECTION
    described = (
        text(os.name), text(os.version), text(app.name), text(app.version), text(app.build),
        text(device.id), text(device.type), text(device.model),
        text(library.name), text(library.version),
        text(context.locale), text(context.timezone), text(ip), text(context.userAgent),
    )  # fmt: skip
    return _ContextColumns(context_text, context.ignoreSentAt is True, shared.email,
                           shared.phone, text(context.channel), text(context.unit),
                           described)  # fmt: skip
