"""From request bytes to a durable append.

:class:`Collector` resolves the write key (Basic auth username, then the body's
``writeKey``, then the first event's, then ``X-Write-Key`` / ``?writeKey=``), parses
and validates, and queues the rows on the writer. Unknown or disabled write keys
are answered like Segment does (accepted and dropped), but counted durably so
``seamline stats`` shows them.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from seamline.collect.ratelimit import KeyRateLimiter
from seamline.errors import BadRequest, Overloaded, Unauthorized
from seamline.events import EventRows, IngestContext, normalise_events, parse_request
from seamline.events.request import first_event_write_key
from seamline.events.timestamps import utcnow
from seamline.settings import Settings
from seamline.store import AppendResult, Source, Store, Writer
from seamline.store.database import TOKEN_PREFIX
from seamline.store.rate_limits import refusals


@dataclass(frozen=True)
class RequestInfo:
    """What the web layer knows about an ingest request besides its body."""

    authorization: str | None = None
    header_write_key: str | None = None
    client_ip: str | None = None
    fill_ip: bool = False
    retry_count: int = 0


def write_key_from_authorization(header: str | None) -> str | None:
    """``Basic base64(key:)`` (or without the colon) -> key; anything else -> None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            "Authorization header is not valid Basic auth; send base64('<writeKey>:').",
            code="invalid_authorization",
        ) from None
    key = decoded.split(":", 1)[0].strip()
    return key or None


class Collector:
    def __init__(self, store: Store, writer: Writer, settings: Settings):
        self._store = store
        self._writer = writer
        self._settings = settings
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}
        # per-write-key token buckets (seamline.collect.ratelimit); off when the rate is 0
        self.rate_limiter = KeyRateLimiter(settings.ingest_rate_limit, settings.ingest_rate_burst)
        self.refresh_sources()

    def refresh_sources(self) -> None:
        sources = {source.write_key: source for source in self._store.sources()}
        with self._lock:
            self._sources = sources

    def source_for_key(self, write_key: str) -> Source | None:
        return self._sources.get(write_key)

    def accept(
        self, body: bytes, *, batch: bool, forced_type: str | None, info: RequestInfo
    ) -> Future[AppendResult]:
        """Validate one request and queue it; the future resolves after COMMIT."""
        settings = self._settings
        writer = self._writer
        if writer.queued_events >= writer.queue_max_events:
            # Shed load before parsing: the writer would refuse any request now, and parsing
            # the bodies it refuses would take the CPU the accepted ones need.
            raise Overloaded(
                f"The write queue is full ({writer.queued_events} events waiting); "
                "retry after the Retry-After delay.",
                retry_after=writer.retry_after_seconds,
            )
        wait = writer.expected_wait()
        if wait > settings.queue_max_wait_ms / 1000:
            # Bound the wait, not only the length: an accepted request should be answered
            # within about a second even when far more is offered than the disk can take.
            raise Overloaded(
                f"The write queue holds about {wait:.1f} s of work; retry after the "
                "Retry-After delay.",
                retry_after=writer.retry_after_seconds,
            )
        limiter = self.rate_limiter
        auth_key = write_key_from_authorization(info.authorization)
        if limiter.enabled and auth_key:
            known = self.source_for_key(auth_key)
            if known is not None and known.enabled:  # refuse before parsing the body
                self._limit(lambda: limiter.check(known.source_id))
        parsed = parse_request(
            body,
            batch=batch,
            max_events=settings.max_batch_events,
            max_event_bytes=settings.max_event_bytes,
        )
        write_key = (
            auth_key
            or parsed.write_key
            or (first_event_write_key(parsed.events[0]) if parsed.events else None)
            or info.header_write_key
        )
        if not write_key:
            raise BadRequest(
                "No write key: send it as the Basic auth username or as 'writeKey' in the body.",
                code="missing_write_key",
            )
        if write_key.startswith(TOKEN_PREFIX):
            raise Unauthorized(
                "That is a secret API token; ingest routes take a source's write key. "
                "Never ship secret tokens in apps.",
                code="secret_token_on_ingest",
            )
        source = self.source_for_key(write_key)
        if source is None or not source.enabled:
            # Segment answers 200 and drops; we count the drop durably.
            return self._writer.submit(
                EventRows(), [], {"dropped_unknown_key": len(parsed.events)}
            )
        if limiter.enabled:  # the whole request is admitted or refused, never a part
            self._limit(lambda: limiter.take(source.source_id, len(parsed.events)))
        ctx = IngestContext(
            source_id=source.source_id,
            channel=source.channel,
            unit=source.unit,
            received_at=utcnow(),
            client_ip=info.client_ip,
            fill_ip=info.fill_ip,
            retry_count=info.retry_count,
            skew_flag_seconds=settings.skew_flag_seconds,
        )
        rows, failed = normalise_events(
            parsed.events,
            ctx,
            forced_type=forced_type,
            batch_sent_at=parsed.sent_at,
            batch_context=parsed.context,
            batch_integrations=parsed.integrations,
        )
        if not limiter.enabled:
            return self._writer.submit(rows, failed)
        try:
            return self._writer.submit(rows, failed)
        except Overloaded:  # a full queue refuses it: it must not use up the key's budget
            limiter.give_back(source.source_id, len(parsed.events))
            raise

    def _limit(self, admit: Callable[[], None]) -> None:
        try:
            admit()
        except Overloaded:
            self.rate_limiter.maybe_flush(self._writer)
            raise

    def rate_limited(self) -> dict[str, int]:
        """Requests refused by the rate limit, by source id: written plus not yet written."""
        counts = refusals(self._store)
        for source_id, count in self.rate_limiter.unflushed().items():
            counts[source_id] = counts.get(source_id, 0) + count
        return counts

    def add_rate_limited(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Add ``rate_limited`` (requests refused with 429) per source and in all to stats."""
        counts = self.rate_limited()
        ids = {source.name: source.source_id for source in self._store.sources()}
        for entry in stats.get("sources", []):
            entry["rate_limited"] = counts.get(ids.get(entry["name"], ""), 0)
        stats["rate_limited"] = sum(counts.values())
        return stats

    def close(self) -> None:
        """Write the rate-limit refusal counts; call before the writer stops."""
        self.rate_limiter.flush(self._writer)

    def import_events(self, source: Source, events: list[Any]) -> Future[AppendResult]:
        """Queue already-decoded events from a file; their timestamps are kept as given."""
        ctx = IngestContext(
            source_id=source.source_id,
            channel=source.channel,
            unit=source.unit,
            received_at=utcnow(),
            keep_timestamps=True,
        )
        rows, failed = normalise_events(events, ctx)
        return self._writer.submit(rows, failed)
