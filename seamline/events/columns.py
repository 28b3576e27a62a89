"""The columns of a normalised event: one definition for the parser, the store and the lake."""

from __future__ import annotations

import pyarrow as pa

#: Columns of a normalised event, in storage order (the store maps them to types).
EVENT_COLUMNS: tuple[str, ...] = (
    "message_id", "source_id", "type", "event", "name", "category",
    "user_id", "anonymous_id", "group_id", "previous_id", "person_id",
    "channel", "unit",
    "timestamp", "original_timestamp", "sent_at", "received_at",
    "os_name", "os_version", "app_name", "app_version", "app_build",
    "device_id", "device_type", "device_model", "library_name", "library_version",
    "locale", "timezone", "ip", "user_agent",
    "properties", "traits", "context", "integrations", "metadata",
    "skew_flag", "retry_count",
    "contact_email", "contact_phone",
)  # fmt: skip

#: The columns that hold a JSON object's text (DuckDB type ``JSON``).
JSON_COLUMNS: tuple[str, ...] = ("properties", "traits", "context", "integrations", "metadata")
#: The event's email and phone, identity inputs. Normalisation carries the raw JSON values
#: (identify traits first, then ``context.traits``); the identity service replaces them by
#: their normalised form before the append, which is what the store keeps (NULL when
#: absent, invalid or blocked; see :mod:`seamline.store.contacts`).
CONTACT_COLUMNS: tuple[str, ...] = ("contact_email", "contact_phone")
#: The times; normalised rows carry them as integer microseconds since the epoch (naive
#: UTC, :func:`seamline.events.timestamps.to_micros`), the store as ``TIMESTAMP``.
TIME_COLUMNS: tuple[str, ...] = ("timestamp", "original_timestamp", "sent_at", "received_at")
#: Row tuples of the normaliser are in this order (the stored columns).
ROW_COLUMNS = EVENT_COLUMNS

_TS = pa.timestamp("us")
_ARROW_TYPES: dict[str, pa.DataType] = {
    **dict.fromkeys(TIME_COLUMNS, _TS), "skew_flag": pa.bool_(), "retry_count": pa.int32(),
}
#: The stored columns as Arrow (naive UTC timestamps), the shape the store appends.
EVENTS_SCHEMA = pa.schema([(name, _ARROW_TYPES.get(name, pa.string())) for name in EVENT_COLUMNS])
