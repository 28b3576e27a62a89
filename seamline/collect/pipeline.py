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

from seamline.collect.parsing import ParsePool
from seamline.collect.ratelimit import KeyRateLimiter
from seamline.errors import BadRequest, Overloaded, Unauthorized
from seamline.events import EventRows, IngestContext, normalise_events
from seamline.events.bodies import ParsedBody, ParseJob, assign_source, parse_body
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
        # parse worker processes (see seamline.collect.parsing); None: parse in the caller
        self.parsers: ParsePool | None = None
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
        # bodies still being parsed will queue too: they count towards the wait
        wait = writer.expected_wait(self.parsers.arriving_events() if self.parsers else 0.0)
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
        known = self.source_for_key(auth_key) if auth_key else None
        if known is not None and not known.enabled:
            known = None
        if limiter.enabled and known is not None:  # refuse before parsing the body
            self._limit(lambda: limiter.check(known.source_id))
        job = ParseJob(
            body, batch, forced_type, utcnow(),
            max_events=settings.max_batch_events,
            max_event_bytes=settings.max_event_bytes,
            skew_flag_seconds=settings.skew_flag_seconds,
            client_ip=info.client_ip, fill_ip=info.fill_ip, retry_count=info.retry_count,
            source_id=known.source_id if known is not None else None,
        )  # fmt: skip
        if self.parsers is None:
            return self._admit(parse_body(job), auth_key, info)
        return self.parsers.run(job, lambda parsed: self._admit(parsed, auth_key, info))

    def _admit(self, parsed: ParsedBody, auth_key: str | None,
               info: RequestInfo) -> Future[AppendResult]:  # fmt: skip
        """Resolve the write key of a parsed body and queue its rows on the writer."""
        write_key = auth_key or parsed.write_key or info.header_write_key
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
            return self._writer.submit(EventRows(), [], {"dropped_unknown_key": parsed.events})
        limiter = self.rate_limiter
        if limiter.enabled:  # the whole request is admitted or refused, never a part
            self._limit(lambda: limiter.take(source.source_id, parsed.events))
        assign_source(parsed, source.source_id, source.channel, source.unit)
        # fingerprints computed for another source (the sources changed meanwhile): none
        digests = parsed.key_digests if parsed.keys_source == source.source_id else None
        if not limiter.enabled:
            return self._writer.submit(parsed.rows, parsed.failed, digests=digests)
        try:
            return self._writer.submit(parsed.rows, parsed.failed, digests=digests)
        except Overloaded:  # a full queue refuses it: it must not use up the key's budget
            limiter.give_back(source.source_id, parsed.events)
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

    def start_parsers(self, processes: int, nice: int = 0) -> None:
        """Parse request bodies in ``processes`` worker processes (0: in the caller), at
        ``nice`` steps below the server's priority."""
        if processes > 0 and self.parsers is None:
            self.parsers = ParsePool(processes, nice)

    def close(self) -> None:
        """Finish the bodies being parsed and write the rate-limit refusal counts; call
        before the writer stops."""
        if self.parsers is not None:
            self.parsers.close()
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
