"""Live events: committed events fanned out to dashboard viewers as server-sent events.

:meth:`Broadcaster.publish` is a :meth:`Writer.add_listener` callback: it runs on the
writer thread after each commit, so it only summarises the rows (at most ``per_commit``
of them) and hands one batch to each viewer's event loop. Everything is bounded: the
number of viewers, each viewer's queue (a slow viewer loses batches, counted, and never
slows ingest) and the recent events kept for a page that opens.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from seamline.events import EventRows
from seamline.events.timestamps import from_micros
from seamline.web.charts import colour

Batch = list[dict[str, Any]]


def _iso(micros: int | None) -> str | None:
    """A row's time (microseconds since the epoch) as ISO-8601 text."""
    return None if micros is None else from_micros(micros).isoformat()


@dataclass
class Viewer:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Batch]
    dropped: int = 0

    def offer(self, batch: Batch) -> None:  # runs on the viewer's event loop
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.dropped += len(batch)


@dataclass
class Broadcaster:
    source_names: Callable[[], dict[str, str]]  # source id -> name, read when one is unknown
    max_viewers: int = 32
    queue_batches: int = 64
    per_commit: int = 100
    recent_events: int = 50
    heartbeat_seconds: float = 15.0
    #: Set by ``serve``: true once the server is stopping, so open streams end promptly.
    should_stop: Callable[[], bool] = lambda: False
    _viewers: list[Viewer] = field(default_factory=list)
    _recent: deque[dict[str, Any]] = field(default_factory=deque)
    _names: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- writer thread -------------------------------------------------------------
    def publish(self, rows: EventRows) -> None:
        """Summarise the newest rows of a commit and offer them to every viewer."""
        total = len(rows)
        if not total:
            return
        # with nobody watching, only what the recent list keeps (a viewer joining gets it)
        keep = self.per_commit if self._viewers else min(self.per_commit, self.recent_events)
        batch = [self._summary(rows.columns, i) for i in range(max(0, total - keep), total)]
        if total > len(batch):
            batch[0]["skipped"] = total - len(batch)
        with self._lock:
            self._recent.extend(batch)
            while len(self._recent) > self.recent_events:
                self._recent.popleft()
            viewers = list(self._viewers)
        for viewer in viewers:
            try:
                viewer.loop.call_soon_threadsafe(viewer.offer, batch)
            except RuntimeError:  # the viewer's loop has closed
                self.leave(viewer)

    def _summary(self, columns: dict[str, list[Any]], i: int) -> dict[str, Any]:
        source_id = columns["source_id"][i]
        if source_id not in self._names:
            self._names = self.source_names()
        return {
            "timestamp": _iso(columns["timestamp"][i]),
            "received_at": _iso(columns["received_at"][i]),
            "type": columns["type"][i],
            "event": columns["event"][i] or columns["type"][i],
            "channel": columns["channel"][i],
            "colour": colour(columns["channel"][i]),
            "source": self._names.get(source_id, source_id),
            "user_id": columns["user_id"][i],
            "anonymous_id": columns["anonymous_id"][i],
        }

    # -- event loop --------------------------------------------------------------------
    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    def join(self) -> Viewer | None:
        """A new viewer, or None when ``max_viewers`` are already watching."""
        viewer = Viewer(asyncio.get_running_loop(), asyncio.Queue(self.queue_batches))
        with self._lock:
            if len(self._viewers) >= self.max_viewers:
                return None
            self._viewers.append(viewer)
        return viewer

    def leave(self, viewer: Viewer) -> None:
        with self._lock:
            if viewer in self._viewers:
                self._viewers.remove(viewer)

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    async def stream(self, viewer: Viewer, poll_seconds: float = 1.0) -> AsyncIterator[str]:
        """Server-sent events for one viewer until the server stops or the viewer goes."""
        try:
            yield "retry: 3000\n\n"
            idle = 0.0
            while not self.should_stop():
                try:
                    batch = await asyncio.wait_for(viewer.queue.get(), poll_seconds)
                except TimeoutError:
                    idle += poll_seconds
                    if idle >= self.heartbeat_seconds:
                        idle = 0.0
                        yield ": keep-alive\n\n"  # proxies close silent connections
                    continue
                idle = 0.0
                payload = {"events": batch, "dropped": viewer.dropped}
                yield f"event: events\ndata: {json.dumps(payload, default=str)}\n\n"
        finally:
            self.leave(viewer)
