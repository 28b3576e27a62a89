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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from seamline.errors import BadRequest, Unauthorized
from seamline.events import EventRows, IngestContext, normalise_events, parse_request
from seamline.events.request import first_event_write_key
from seamline.events.timestamps import utcnow
from seamline.settings import Settings
from seamline.store import AppendResult, Source, Store, Writer
from seamline.store.database import TOKEN_PREFIX


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
        parsed = parse_request(
            body,
            batch=batch,
            max_events=settings.max_batch_events,
            max_event_bytes=settings.max_event_bytes,
        )
        write_key = (
            write_key_from_authorization(info.authorization)
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
        return self._writer.submit(rows, failed)

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
