"""The dashboard's parts without a browser: sessions, the live broadcaster, chart data."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from seamline.events import EventRows
from seamline.events.timestamps import to_micros
from seamline.web.access import safe_next
from seamline.web.charts import journey_sankey, split_loops
from seamline.web.formatting import duration
from seamline.web.live import Broadcaster
from seamline.web.sessions import SessionStore


def test_sessions_expire_and_stay_bounded() -> None:
    store = SessionStore(idle=0.05, lifetime=10, max_sessions=2)
    first = store.create("a", "read")
    assert store.get(first.session_id) is first
    assert first.csrf_ok(first.csrf) and not first.csrf_ok("forged") and not first.csrf_ok(None)
    time.sleep(0.08)
    assert store.get(first.session_id) is None  # idle too long
    kept = [store.create(name, "read") for name in "bcd"]
    assert store.get(kept[0].session_id) is None  # the oldest went past max_sessions
    assert store.get(kept[2].session_id) is not None
    store.end(kept[2].session_id)
    assert store.get(kept[2].session_id) is None


def test_next_is_never_another_host() -> None:
    assert safe_next("/funnel?steps=A") == "/funnel?steps=A"
    for hostile in ("https://evil.example", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(hostile) == "/"


def _rows(count: int) -> EventRows:
    rows, when = EventRows(), to_micros(datetime(2026, 1, 1))  # rows carry microseconds
    for i in range(count):
        rows.append({"message_id": f"m{i}", "source_id": "src_1", "type": "track",
                     "event": f"E{i}", "channel": "mobile", "user_id": "u",
                     "timestamp": when, "received_at": when})  # fmt: skip
    return rows


def test_broadcaster_is_bounded_and_never_blocks_the_writer() -> None:
    async def scenario() -> tuple[list[Any], int, bool, int]:
        live = Broadcaster(lambda: {"src_1": "app"}, max_viewers=1, queue_batches=2,
                           per_commit=3, recent_events=4)  # fmt: skip
        viewer = live.join()
        assert viewer is not None
        refused = live.join() is None  # one viewer at most
        for _ in range(4):  # the writer thread publishes; this viewer never reads
            live.publish(_rows(5))
        await asyncio.sleep(0.01)  # let call_soon_threadsafe run the offers
        first = await viewer.queue.get()
        live.leave(viewer)
        return first, viewer.dropped, refused, len(live.recent())

    first, dropped, refused, recent = asyncio.run(scenario())
    assert refused
    assert [event["event"] for event in first] == ["E2", "E3", "E4"]  # newest per_commit rows
    assert first[0]["skipped"] == 2 and first[0]["source"] == "app"
    assert dropped == 6  # two batches of three did not fit the queue
    assert recent == 4


def _edge(a: str, b: str, people: int) -> dict[str, Any]:
    return {"from": a, "to": b, "from_channel": "mobile", "to_channel": "web",
            "people": people, "transitions": people, "median_seconds": 5.0,
            "p90_seconds": 9.0}  # fmt: skip


def test_sankey_gets_the_forward_flow_and_loops_are_kept_aside() -> None:
    edges = [_edge("A", "B", 10), _edge("B", "C", 8), _edge("C", "A", 9), _edge("B", "B", 3)]
    starts = [{"event": "A", "channel": "mobile", "people": 10}]
    for edge in edges:  # one channel, so nodes are the events
        edge["from_channel"] = edge["to_channel"] = "mobile"
    forward, loops = split_loops(edges, "channel", starts)
    assert [(e["from"], e["to"]) for e in forward] == [("A", "B"), ("B", "C")]
    assert [(e["from"], e["to"]) for e in loops] == [("C", "A"), ("B", "B")]
    figure = journey_sankey(forward)
    link = figure["data"][0]["link"]
    assert link["value"] == [10, 8]
    assert link["customdata"][0][2:4] == [duration(5.0), duration(9.0)]


def test_durations_read_like_a_person_says_them() -> None:
    assert [duration(s) for s in (None, 5, 95, 7200, 3 * 86400)] == [
        "\u2013", "5.0 s", "1.6 min", "2.0 h", "3.0 d"]  # fmt: skip
