"""Overload and backpressure (reliability-and-security.md §3.3 step 2 and §6.3).

First the sustainable rate is measured: senders that re-send every refused batch keep
the server saturated for a few seconds, and what it acknowledges per second is the
rate. Then about 3x that rate is offered for OVERLOAD_SECONDS by paced senders that
give up on a refused batch. Pass, as the spec states it:

- every answer is ``200`` or ``503`` (``429`` is the rate limit's, tests/test_rate_limit.py),
  each ``503`` with an integer ``Retry-After``; no other 5xx;
- p99 latency of the accepted requests <= 1 s;
- the write queue never past its bound, the server's peak RSS below RSS_BOUND_MIB;
- ``200`` again within 5 s of the load stopping;
- acked = stored: a ``503`` stored nothing, a ``200`` stored everything.

The WAL file's size is watched to see DuckDB's automatic checkpoints (it shrinks after
one); the figures say how many ran and whether the slowest accepted requests overlapped
one. Knob: ``SEAMLINE_OVERLOAD_SECONDS`` (10; the spec's release size is 60).
"""

from __future__ import annotations

import itertools
import json
import os
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
SUSTAINED_SECONDS = 3.0
OVERLOAD_SECONDS = float(os.environ.get("SEAMLINE_OVERLOAD_SECONDS", "10"))
OVERLOAD_FACTOR = 3.0
MAX_P99_SECONDS = 1.0
RSS_BOUND_MIB = 1024
# The p99 bound is checked only when other processes used at most this much CPU during
# the overload (a shared 2-core machine can starve the server); the figure is always
# reported with the other processes' share.
MAX_OTHER_CORES = 0.5


def _cpu_ticks(pid: int | None = None) -> int:
    """Busy CPU ticks of the machine (no pid) or of one process (user + system)."""
    if pid is None:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12])


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_overload_at_three_times_the_sustainable_rate(data_dir: Path) -> None:
    server = Server(
        data_dir,
        # a small queue, so that a short run overloads it; the other settings are the defaults
        env={"SEAMLINE_QUEUE_MAX_EVENTS": str(QUEUE_MAX_EVENTS),
             "SEAMLINE_RETRY_AFTER_SECONDS": "3"},
    ).start()
    write_key = server.add_source("overload-app", "web")
    depths: list[int] = []
    wal_sizes: list[tuple[float, int]] = []
    done = threading.Event()
    wal = data_dir / "seamline.duckdb.wal"

    def watch() -> None:
        with httpx.Client(timeout=10) as client:
            while not done.is_set():
                depths.append(int(client.get(server.url + "/api/health").json()["queued_events"]))
                try:  # a checkpoint may remove the WAL between any two calls
                    size = wal.stat().st_size
                except FileNotFoundError:
                    size = 0
                wal_sizes.append((time.monotonic(), size))
                time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    sustained = Sender(server.url, write_key, threads=8, retry=True, seed=1)
    overload: Sender | None = None
    try:
        watcher.start()
        sustained.start()
        time.sleep(SUSTAINED_SECONDS)
        sustained.stop()
        sustainable = len(sustained.stats.acked_ids) / SUSTAINED_SECONDS
        offered = OVERLOAD_FACTOR * sustainable
        overload = Sender(server.url, write_key, threads=48, retry=False, rate=offered, seed=2)
        assert server.proc is not None
        ticks = (_cpu_ticks(), _cpu_ticks(server.proc.pid), _cpu_ticks(os.getpid()))
        began = time.monotonic()
        overload.start()
        time.sleep(OVERLOAD_SECONDS)
        overload.stop()
        overload_seconds = time.monotonic() - began
        hz = os.sysconf("SC_CLK_TCK")
        server_cores = (_cpu_ticks(server.proc.pid) - ticks[1]) / hz / overload_seconds
        other_cores = ((_cpu_ticks() - ticks[0]) / hz / overload_seconds - server_cores
                       - (_cpu_ticks(os.getpid()) - ticks[2]) / hz / overload_seconds)  # fmt: skip
        peak_rss = _peak_rss_mib(server.proc.pid) if server.proc else 0.0
        done.set()
        watcher.join(15)
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
        sustained.stop(abandon=True)
        if overload is not None:
            overload.stop(abandon=True)
        server.stop()
    stats = overload.stats
    stored = read_store(data_dir)
    after_ids = {event["messageId"] for event in make_batch("after")}
    latencies = sorted(stats.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else None
    # DuckDB's automatic checkpoints: the WAL shrinks when one has finished
    checkpoints = [t for (_, before), (t, size) in itertools.pairwise(wal_sizes)
                   if size < before]  # fmt: skip
    slowest = sorted(zip(stats.latencies, stats.accepted_at, strict=True), reverse=True)
    slow = slowest[: max(1, len(slowest) // 100)]  # the top 1%: what sets the p99
    # a request held up by a checkpoint is answered just after it ends
    near_checkpoint = sum(
        1 for latency, sent in slow
        if any(sent - 0.2 <= end <= sent + latency + 0.2 for end in checkpoints)
    )  # fmt: skip
    answers = sum(stats.statuses.values())
    figures = {
        "sustainable_events_per_s": round(sustainable),
        "offered_events_per_s": round(sum(stats.batch_sizes.values()) / overload_seconds),
        "target_factor": OVERLOAD_FACTOR,
        "seconds": round(overload_seconds, 1),
        "queue_max_events": QUEUE_MAX_EVENTS,
        "answers": dict(stats.statuses),
        "share_503": round(stats.statuses["503"] / answers, 3) if answers else None,
        "codes_503": dict(stats.error_codes),
        "events_acked": len(stats.acked_ids),
        "events_acked_per_s": round(len(stats.acked_ids) / overload_seconds),
        "events_refused_503": len(stats.rejected_ids),
        "events_stored": stored.rows,
        "max_queue_depth_seen": max(depths, default=0),
        "accepted_latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "accepted_latency_p99_s": round(p99, 3) if p99 is not None else None,
        "accepted_latency_max_s": round(latencies[-1], 3) if latencies else None,
        "automatic_checkpoints_seen": len(checkpoints),
        "slowest_1pct_overlapping_a_checkpoint": f"{near_checkpoint}/{len(slow)}",
        "server_cores": round(server_cores, 2),
        "other_processes_cores": round(other_cores, 2),
        "peak_rss_mib": round(peak_rss),
        "rss_bound_mib": RSS_BOUND_MIB,
        "recovered_after_s": round(recovered_after, 2) if recovered_after is not None else None,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "overload.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("overload:", json.dumps(figures))

    assert set(stats.statuses) <= {"200", "503"}, (stats.statuses, stats.unexpected[:5])
    assert stats.statuses["503"] > 0, "the load never filled the queue: the test proved nothing"
    assert stats.statuses["200"] > 0
    assert figures["offered_events_per_s"] >= 2 * sustainable, "the senders could not overload"
    assert all(value is not None and value.isdigit() for value in stats.retry_after), set(
        stats.retry_after
    )
    assert {int(value) for value in stats.retry_after if value} == {3}
    assert set(stats.error_codes) == {"overloaded"}, stats.error_codes
    assert max(depths) <= QUEUE_MAX_EVENTS, f"queue grew to {max(depths)}"
    assert p99 is not None
    if other_cores <= MAX_OTHER_CORES:
        assert p99 <= MAX_P99_SECONDS, f"accepted p99 {p99:.2f} s"
    else:  # the server had only part of the 2 cores: the latency says nothing of seamline
        print(f"accepted p99 {p99:.2f} s NOT CHECKED: other processes took "
              f"{other_cores:.2f} cores during the run")
    assert peak_rss < RSS_BOUND_MIB, f"peak RSS {peak_rss:.0f} MiB"
    assert recovered_after is not None, "no 200 within 5 s after the load stopped"
    missing = stats.acked_ids - stored.ids
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert not stats.rejected_ids & stored.ids, "a batch answered 503 was stored"
    assert stored.ids == stats.acked_ids | sustained.stats.acked_ids | after_ids
    assert stored.rows == stored.distinct_ids


def test_queue_bounded_by_its_expected_wait(data_dir: Path) -> None:
    """With a tiny wait bound (1 ms of queued work) concurrent senders see 503s with
    ``Retry-After`` although the queue holds far fewer events than its bound in events;
    every 200 is stored and nothing refused is."""
    server = Server(data_dir, env={"SEAMLINE_QUEUE_MAX_WAIT_MS": "1",
                                   "SEAMLINE_RETRY_AFTER_SECONDS": "3"}).start()  # fmt: skip
    write_key = server.add_source("wait-bound", "web")
    sender = Sender(server.url, write_key, threads=16, retry=False, seed=3)
    try:
        sender.start()
        time.sleep(4)
        sender.stop()
        with httpx.Client(timeout=10) as client:
            health = client.get(server.url + "/api/health").json()
    finally:
        sender.stop(abandon=True)
        server.stop()
    stats = sender.stats
    stored = read_store(data_dir)
    assert set(stats.statuses) <= {"200", "503"}, (stats.statuses, stats.unexpected[:5])
    assert stats.statuses["503"] > 0 and stats.statuses["200"] > 0, stats.statuses
    assert {int(value) for value in stats.retry_after if value} == {3}
    assert set(stats.error_codes) == {"overloaded"}, stats.error_codes
    assert int(health["queued_events"]) < 200_000
    assert stats.acked_ids <= stored.ids
    assert not stats.rejected_ids & stored.ids, "a batch answered 503 was stored"
    assert stored.rows == stored.distinct_ids
