"""Per-write-key rate limits: a token bucket per source, counted in events.

Each source's bucket holds up to ``burst`` events and refills at ``rate`` events a
second. A request is admitted while its source's bucket is not empty; its events are
then taken from the bucket, which may go below zero, so a batch bigger than the burst
is never starved, and the source then waits until the debt is paid back. While the
bucket is empty the request is refused whole with ``429`` and a ``Retry-After`` of the
seconds until the bucket holds a token again: nothing of it is stored.

The check is a few float operations per *request* (never per event) under the
bucket's own lock, which only requests of the same source share; ingest calls it on
the event loop, so the locks are in practice never contended.

Refusals are counted per source in memory and written to the ``counters`` table at
most once a second (and when the workspace closes), through the writer, so a flood of
refused requests costs one small transaction a second, not one per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from seamline.errors import Overloaded
from seamline.store.rate_limits import add_refusals
from seamline.store.writer import Writer

log = logging.getLogger("seamline.collect")
FLUSH_INTERVAL = 1.0  # seconds between writes of the refusal counters


class RateLimited(Overloaded):
    """A write key sent more than its rate limit; retry after ``retry_after`` seconds."""

    status = 429
    code = "rate_limited"


class _Bucket:
    __slots__ = ("lock", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float):
        self.tokens = tokens
        self.stamp = stamp
        self.lock = threading.Lock()


class KeyRateLimiter:
    """Token buckets by source id. ``rate`` <= 0 turns the limiter off.

    >>> limiter = KeyRateLimiter(rate=100, burst=100)
    >>> limiter.take("src", 100)  # the burst
    >>> limiter.retry_after("src")
    1
    """

    def __init__(self, rate: float, burst: float = 0, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst) if burst > 0 else max(self.rate, 1.0)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.refused: dict[str, int] = {}  # source id -> requests refused since start
        self._unflushed: dict[str, int] = {}  # not yet in the counters table
        self._counts_lock = threading.Lock()
        self._last_flush = 0.0
        self._flushing: Future[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, source_id: str, now: float) -> _Bucket:
        bucket = self._buckets.get(source_id)
        if bucket is None:  # setdefault: two first requests at once share one bucket
            bucket = self._buckets.setdefault(source_id, _Bucket(self.burst, now))
        return bucket

    @staticmethod
    def _refill(bucket: _Bucket, now: float, rate: float, burst: float) -> None:
        if now > bucket.stamp:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now

    def _wait(self, tokens: float) -> int:
        """Whole seconds (at least 1) until a bucket at ``tokens`` holds one token."""
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def retry_after(self, source_id: str) -> int:
        """0 when ``source_id`` may send now, else the seconds until it may."""
        if not self.enabled:
            return 0
        now = self._clock()
        bucket = self._bucket(source_id, now)
        with bucket.lock:
            self._refill(bucket, now, self.rate, self.burst)
            return 0 if bucket.tokens >= 1.0 else self._wait(bucket.tokens)

    def check(self, source_id: str) -> None:
        """Raise :class:`RateLimited` (and count it) if ``source_id``'s bucket is empty."""
        wait = self.retry_after(source_id)
        if wait:
            self._refuse(source_id, wait)

    def take(self, source_id: str, events: int) -> None:
        """Admit a request of ``events`` events, or raise :class:`RateLimited` whole."""
        if not self.enabled:
            return
        now = self._clock()
        bucket = self._bucket(source_id, now)
        with bucket.lock:
            self._refill(bucket, now, self.rate, self.burst)
            if bucket.tokens >= 1.0:
                bucket.tokens -= max(1, events)
                return
            wait = self._wait(bucket.tokens)
        self._refuse(source_id, wait)

    def give_back(self, source_id: str, events: int) -> None:
        """Return a request's events: it was admitted here but refused later (queue full)."""
        if not self.enabled:
            return
        bucket = self._buckets.get(source_id)
        if bucket is not None:
            with bucket.lock:
                bucket.tokens = min(self.burst, bucket.tokens + max(1, events))

    def _refuse(self, source_id: str, wait: int) -> None:
        with self._counts_lock:
            self.refused[source_id] = self.refused.get(source_id, 0) + 1
            self._unflushed[source_id] = self._unflushed.get(source_id, 0) + 1
        raise RateLimited(
            f"This write key sent more than its limit of {self.rate:g} events a second "
            f"(setting 'ingest_rate_limit'); retry after {wait} s. Nothing of this request "
            "was stored.",
            retry_after=wait,
        )

    # -- the refusal counters ------------------------------------------------------------
    def unflushed(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._unflushed)

    def maybe_flush(self, writer: Writer) -> None:
        """Write the refusal counts if a second has passed and no write is under way."""
        if not self._unflushed or (self._flushing is not None and not self._flushing.done()):
            return
        now = self._clock()
        if now - self._last_flush < FLUSH_INTERVAL:
            return
        self._last_flush = now
        self._flushing = self._flush(writer)

    def flush(self, writer: Writer, timeout: float = 5.0) -> None:
        """Write the refusal counts now and wait (the workspace is closing)."""
        if self._flushing is not None:
            with contextlib.suppress(Exception):  # logged by its callback
                self._flushing.result(timeout)
        if self._unflushed:
            with contextlib.suppress(Exception):
                self._flush(writer).result(timeout)

    def _flush(self, writer: Writer) -> Future[None]:
        with self._counts_lock:
            counts, self._unflushed = self._unflushed, {}

        def restore(done: Future[None]) -> None:
            if done.exception() is None:
                return
            log.warning("could not record rate-limit refusals (kept for the next try): %s",
                        done.exception())  # fmt: skip
            with self._counts_lock:
                for source_id, count in counts.items():
                    self._unflushed[source_id] = self._unflushed.get(source_id, 0) + count

        try:
            future = writer.call(lambda con: add_refusals(con, counts))
        except Overloaded as exc:  # the queue is full or the server is stopping: keep them
            future = Future()
            future.set_exception(exc)
        future.add_done_callback(restore)
        return future
