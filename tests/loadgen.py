"""A load generator for the crash, shutdown and overload tests, and a read of the stored file.

:class:`Sender` runs threads that each post 100-event batches with client-side
messageIds to a real server. A batch counts as acknowledged only when the answer is
``200``; until then it is re-sent (after connection errors, timeouts and 503s), the
way the Segment SDKs retry. ``X-Retry-Count`` marks re-sends, so the stored
``retry_count`` tells which events were committed by an attempt whose answer was lost.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import httpx

DATABASE_FILE = "seamline.duckdb"


def make_batch(batch_id: str, size: int = 100) -> list[dict[str, Any]]:
    """``size`` valid track events whose messageIds are ``<batch_id>-<n>``."""
    return [
        {
            "type": "track",
            "event": "Load Tested",
            "userId": f"user-{index % 17}",
            "messageId": f"{batch_id}-{index}",
            "timestamp": "2026-11-23T10:00:00.000Z",
            "properties": {"n": index, "pad": "x" * 40},
            "context": {"library": {"name": "seamline-tests", "version": "1"}},
        }
        for index in range(size)
    ]


@dataclass
class SenderStats:
    acked_ids: set[str] = field(default_factory=set)
    acked_batches: int = 0
    acked_attempt: dict[str, int] = field(default_factory=dict)  # batch id -> its X-Retry-Count
    sent_batches: set[str] = field(default_factory=set)  # every batch id posted at least once
    resent_batches: set[str] = field(default_factory=set)  # posted again after a failed try
    statuses: Counter[str] = field(default_factory=Counter)
    retry_after: list[str | None] = field(default_factory=list)  # header of every 503
    error_codes: Counter[str] = field(default_factory=Counter)  # "code" of each 503 body
    unexpected: list[str] = field(default_factory=list)  # anything but 200/503/conn. error
    rejected_ids: set[str] = field(default_factory=set)  # batches given up on after a 503
    latencies: list[float] = field(default_factory=list)  # seconds, of each 200 answer
    accepted_at: list[float] = field(default_factory=list)  # time.monotonic() each 200 was sent
    batch_sizes: dict[str, int] = field(default_factory=dict)  # batch id -> events in it


class Sender:
    """Threads posting batches until :meth:`stop`; see the module docstring.

    ``retry=False`` gives up on a batch after its first 503 (overload test) and
    records its ids in ``rejected_ids``; connection errors are still retried.
    ``sizes=(lo, hi)`` draws each batch's size at random (seeded), ``max_events`` stops
    taking new batches once that many events were started, and ``rate`` paces all the
    threads together to about that many events per second.
    """

    def __init__(self, url: str, write_key: str, *, threads: int = 4, batch_size: int = 100,
                 retry: bool = True, timeout: float = 10.0, pause: float = 0.0,
                 sizes: tuple[int, int] | None = None, max_events: int | None = None,
                 rate: float | None = None, seed: int = 0):  # fmt: skip
        self.url = url
        self.write_key = write_key
        self.batch_size = batch_size
        self.retry = retry
        self.timeout = timeout
        self.pause = pause
        self.stats = SenderStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._abandon = threading.Event()  # stop even with a batch unacknowledged
        self._run = uuid.uuid4().hex[:8]
        self.sizes = sizes
        self.max_events = max_events
        self.rate = rate
        self._rng = random.Random(seed)
        self._started_events = 0
        self._began = time.monotonic()
        self.finished = threading.Event()  # set when max_events were all acknowledged
        self._active = threads
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), name=f"sender-{n}", daemon=True)
            for n in range(threads)
        ]

    def start(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, *, abandon: bool = False, timeout: float = 60) -> None:
        """Stop taking new batches; each thread first finishes (acks) its current one,
        unless ``abandon`` (the server is gone for good)."""
        self._stop.set()
        if abandon:
            self._abandon.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a sender thread did not finish"

    def acked_snapshot(self) -> set[str]:
        """The messageIds acknowledged so far (a copy, safe while the threads run)."""
        with self._lock:
            return set(self.stats.acked_ids)

    def _record(self, key: str) -> None:
        with self._lock:
            self.stats.statuses[key] += 1

    def _next_size(self) -> int | None:
        """Reserve the next batch's events (None: the budget is spent); paces ``rate``."""
        with self._lock:
            size = self._rng.randint(*self.sizes) if self.sizes else self.batch_size
            if self.max_events is not None:
                size = min(size, self.max_events - self._started_events)
                if size <= 0:
                    return None
            due = self._began + self._started_events / self.rate if self.rate else 0.0
            self._started_events += size
        wait = due - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        return size

    def _loop(self, number: int) -> None:
        try:
            with httpx.Client(auth=(self.write_key, ""), timeout=self.timeout) as client:
                sequence = 0
                while not self._stop.is_set():
                    size = self._next_size()
                    if size is None:
                        return
                    batch_id = f"{self._run}-t{number}-b{sequence}"
                    sequence += 1
                    self._send(client, batch_id, size)
                    if self.pause:
                        time.sleep(self.pause)
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self.finished.set()

    def _send(self, client: httpx.Client, batch_id: str, size: int | None = None) -> None:
        events = make_batch(batch_id, size or self.batch_size)
        with self._lock:
            self.stats.batch_sizes[batch_id] = len(events)
        attempt = 0
        while True:
            if self._abandon.is_set():
                return
            headers = {"X-Retry-Count": str(attempt)} if attempt else {}
            with self._lock:
                self.stats.sent_batches.add(batch_id)
                if attempt:
                    self.stats.resent_batches.add(batch_id)
            attempt += 1
            sent_at = time.monotonic()
            try:
                response = client.post(
                    self.url + "/v1/batch", json={"batch": events}, headers=headers
                )
            except httpx.TransportError as exc:  # refused, reset, timed out: maybe committed
                self._record(type(exc).__name__)
                time.sleep(0.02)
                continue
            self._record(str(response.status_code))
            if response.status_code == 200:
                with self._lock:
                    self.stats.acked_ids.update(event["messageId"] for event in events)
                    self.stats.acked_batches += 1
                    self.stats.acked_attempt[batch_id] = attempt - 1
                    self.stats.latencies.append(response.elapsed.total_seconds())
                    self.stats.accepted_at.append(sent_at)
                return
            if response.status_code == 503:
                try:
                    body = response.json()
                    code = f"{body['code']}" if isinstance(body.get("message"), str) else "?"
                except (ValueError, KeyError, AttributeError):
                    code = "not-the-error-envelope"
                with self._lock:
                    self.stats.retry_after.append(response.headers.get("retry-after"))
                    self.stats.error_codes[code] += 1
                if not self.retry:
                    with self._lock:
                        self.stats.rejected_ids.update(e["messageId"] for e in events)
                    return
                time.sleep(0.05)  # shorter than Retry-After: these tests want pressure
                continue
            with self._lock:
                self.stats.unexpected.append(f"{response.status_code} {response.text[:200]}")
            return


@dataclass
class Stored:
    rows: int
    distinct_ids: int
    ids: set[str]
    retry_count: dict[str, int]  # message_id -> retry_count of the stored copy


    def partial_batches(self, batch_sizes: dict[str, int]) -> list[str]:
        """Batches (``<batch id>-<n>`` message ids) stored with a count other than their
        size: a batch must be stored whole or not at all."""
        per_batch = Counter(message_id.rsplit("-", 1)[0] for message_id in self.ids)
        return [b for b, n in per_batch.items() if n != batch_sizes.get(b)]


def read_store(data_dir: Path) -> Stored:
    """Open the workspace file read-only (the server must be stopped) and read events."""
    con = duckdb.connect(str(data_dir / DATABASE_FILE), read_only=True)
    try:
        rows, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (source_id, message_id)) FROM events"
        ).fetchone() or (0, 0)
        pairs = con.execute("SELECT message_id, retry_count FROM events").fetchall()
    finally:
        con.close()
    return Stored(int(rows), int(distinct), {p[0] for p in pairs}, {p[0]: p[1] for p in pairs})
