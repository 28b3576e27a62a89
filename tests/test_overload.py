"""Overload and backpressure (reliability-and-security.md §3.3 step 2 and §6.3).

A server with a tiny write queue is blasted with concurrent 100-event batches.
Every answer is ``200`` or ``503`` with an integer ``Retry-After``; a ``503`` stores
nothing, a ``200`` stores everything; the queue never grows past its bound; and
once the load stops the server answers ``200`` again at once.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ARTIFACTS, Server
from tests.loadgen import Sender, make_batch, read_store

pytestmark = pytest.mark.slow

QUEUE_MAX_EVENTS = 300
BLAST_SECONDS = 4.0


def test_overload_answers_503_with_retry_after_and_loses_nothing(data_dir: Path) -> None:
    server = Server(
        data_dir,
        env={
            "SEAMLINE_QUEUE_MAX_EVENTS": str(QUEUE_MAX_EVENTS),
            "SEAMLINE_GROUP_COMMIT_WAIT_MS": "50",
            "SEAMLINE_RETRY_AFTER_SECONDS": "3",
        },
    ).start()
    write_key = server.add_source("overload-app", "web")
    depths: list[int] = []
    done = threading.Event()

    def watch_queue() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                depths.append(int(client.get(server.url + "/api/health").json()["queued_events"]))
                time.sleep(0.02)

    watcher = threading.Thread(target=watch_queue, daemon=True)
    sender = Sender(server.url, write_key, threads=16, retry=False)
    try:
        watcher.start()
        sender.start()
        time.sleep(BLAST_SECONDS)
        sender.stop()
        done.set()
        watcher.join(15)
        # Back to 200 as soon as the load is gone.
        recovered_after = None
        started = time.monotonic()
        with httpx.Client(auth=(write_key, ""), timeout=10) as client:
            while time.monotonic() - started < 5:
                answer = client.post(server.url + "/v1/batch", json={"batch": make_batch("after")})
                if answer.status_code == 200:
                    recovered_after = time.monotonic() - started
                    break
                time.sleep(0.1)
    finally:
        done.set()
        sender.stop(abandon=True)
        server.stop()
    stats = sender.stats
    stored = read_store(data_dir)
    after_ids = {event["messageId"] for event in make_batch("after")}
    latencies = sorted(stats.latencies)
    figures = {
        "seconds": BLAST_SECONDS,
        "queue_max_events": QUEUE_MAX_EVENTS,
        "answers": dict(stats.statuses),
        "codes_503": dict(stats.error_codes),
        "events_acked": len(stats.acked_ids),
        "events_refused_503": len(stats.rejected_ids),
        "events_stored": stored.rows,
        "max_queue_depth_seen": max(depths, default=0),
        "accepted_latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "accepted_latency_p99_s": round(latencies[int(len(latencies) * 0.99)], 3)
        if latencies
        else None,
        "recovered_after_s": round(recovered_after, 2) if recovered_after is not None else None,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overload.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("overload:", json.dumps(figures))

    assert set(stats.statuses) <= {"200", "503"}, (stats.statuses, stats.unexpected[:5])
    assert stats.statuses["503"] > 0, "the load never filled the queue: the test proved nothing"
    assert stats.statuses["200"] > 0
    assert all(value is not None and value.isdigit() for value in stats.retry_after), set(
        stats.retry_after
    )
    assert {int(value) for value in stats.retry_after if value} == {3}
    assert set(stats.error_codes) == {"overloaded"}, stats.error_codes
    assert max(depths) <= QUEUE_MAX_EVENTS, f"queue grew to {max(depths)}"
    assert recovered_after is not None, "no 200 within 5 s after the load stopped"
    missing = stats.acked_ids - stored.ids
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert not stats.rejected_ids & stored.ids, "a batch answered 503 was stored"
    assert stored.ids == stats.acked_ids | after_ids
    assert stored.rows == stored.distinct_ids
