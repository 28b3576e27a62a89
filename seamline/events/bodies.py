"""One request body, decoded and normalised before its source is known.

:func:`parse_body` runs where the body is parsed: in the server process, or in a parse
worker process (:mod:`seamline.collect.parsing`), which does not know the sources. It
normalises with an empty source, and :func:`assign_source` fills the source's id, channel
and unit in once the write key is resolved, exactly as if the source had been known (an
event's own ``context.channel`` / ``context.unit`` still win).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from seamline.events.keys import key_digests
from seamline.events.normalise import EventRows, FailedEvent, IngestContext, normalise_events
from seamline.events.request import first_event_write_key, parse_request


@dataclass(frozen=True)
class ParseJob:
    """One request body and what the web layer knows about it."""

    body: bytes
    batch: bool
    forced_type: str | None
    received_at: datetime
    max_events: int
    max_event_bytes: int
    skew_flag_seconds: int
    client_ip: str | None = None
    fill_ip: bool = False
    retry_count: int = 0
    # the source, when the Authorization header already named it: the events' dedupe key
    # fingerprints are then computed with the parse (seamline.events.keys)
    source_id: str | None = None


@dataclass
class ParsedBody:
    """A body's events, normalised for a source not yet known (see :func:`assign_source`)."""

    write_key: str | None  # the body's writeKey, else the first event's
    events: int  # events in the body, good and bad
    rows: EventRows
    failed: list[FailedEvent]
    # the rows' key fingerprints for the source ``keys_source`` (ParseJob.source_id)
    key_digests: bytes | None = None
    keys_source: str | None = None


def parse_body(job: ParseJob) -> ParsedBody:
    """Decode, validate and normalise one body; raises BadRequest for a bad request."""
    parsed = parse_request(job.body, batch=job.batch, max_events=job.max_events,
                           max_event_bytes=job.max_event_bytes)  # fmt: skip
    write_key = parsed.write_key or (
        first_event_write_key(parsed.events[0]) if parsed.events else None
    )
    ctx = IngestContext(
        source_id="",
        channel="",
        unit=None,
        received_at=job.received_at,
        client_ip=job.client_ip,
        fill_ip=job.fill_ip,
        retry_count=job.retry_count,
        skew_flag_seconds=job.skew_flag_seconds,
    )
    rows, failed = normalise_events(
        parsed.events,
        ctx,
        forced_type=job.forced_type,
        batch_sent_at=parsed.sent_at,
        batch_context=parsed.context,
        batch_integrations=parsed.integrations,
    )
    digests = key_digests(job.source_id, rows.columns["message_id"]) if job.source_id else None
    return ParsedBody(write_key, len(parsed.events), rows, failed, digests, job.source_id)


def assign_source(parsed: ParsedBody, source_id: str, channel: str, unit: str | None) -> None:
    """Fill the source in: what normalising with that source's context would have given."""
    columns = parsed.rows.columns
    count = len(parsed.rows)
    columns["source_id"] = [source_id] * count
    # the normaliser keeps an event's own context.channel / context.unit, else the source's
    columns["channel"] = [value or channel for value in columns["channel"]]
    if unit is not None:
        columns["unit"] = [value or unit for value in columns["unit"]]
    for failure in parsed.failed:
        failure.source_id = source_id
