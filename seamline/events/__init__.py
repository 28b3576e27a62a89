"""The Segment message model: parsing, validation and normalisation. Pure: no I/O."""

from seamline.events.columns import EVENT_COLUMNS
from seamline.events.normalise import (
    EventRows,
    FailedEvent,
    IngestContext,
    normalise_events,
)
from seamline.events.request import ParsedRequest, parse_request

__all__ = [
    "EVENT_COLUMNS",
    "EventRows",
    "FailedEvent",
    "IngestContext",
    "ParsedRequest",
    "normalise_events",
    "parse_request",
]
