"""Per-write-key rate limits (seamline.collect.ratelimit): 429 + Retry-After for the key
over its limit, 200 for the others, nothing of a refused request stored."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import pytest

from seamline.collect.ratelimit import KeyRateLimiter, RateLimited
from tests.conftest import ARTIFACTS, Server
from tests.loadgen import DATABASE_FILE, make_batch, read_store

RATE = 40  # events a second per key
BURST = 200
BATCH = 100
BLAST_SECONDS = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_admits_the_burst_then_the_rate_and_computes_retry_after() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(rate=10, burst=30, clock=clock)
    limiter.take("a", 30)  # the whole burst at once
    with pytest.raises(RateLimited) as refused:
        limiter.take("a", 1)
    assert refused.value.status == 429 and refused.value.retry_after == 1
    limiter.check("b")  # another key is not affected
    limiter.take("b", 5)
    clock.now += 0.25  # 2.5 tokens back: admitted, and may overdraw (a batch is never starved)
    limiter.take("a", 50)
    assert limiter.retry_after("a") == 5  # 47.5 in debt + 1 token at 10/s
    clock.now += 4.0
    assert limiter.retry_after("a") == 1
    clock.now += 1.0
    assert limiter.retry_after("a") == 0
    clock.now += 100.0  # refills up to the burst, no further
    limiter.take("a", 30)
    assert limiter.retry_after("a") == 1
    limiter.give_back("a", 30)  # refused later by a full queue: the budget comes back
    assert limiter.retry_after("a") == 0
    assert limiter.refused == {"a": 1}
    assert limiter.unflushed() == {"a": 1}


def test_rate_zero_is_off() -> None:
    limiter = KeyRateLimiter(rate=0)
    assert not limiter.enabled
    for _ in range(1000):
        limiter.take("a", 2500)
    assert limiter.retry_after("a") == 0


def test_a_key_over_its_limit_gets_429_while_another_keeps_getting_200(data_dir: Path) -> None:
    server = Server(
        data_dir,
        env={"SEAMLINE_INGEST_RATE_LIMIT": str(RATE), "SEAMLINE_INGEST_RATE_BURST": str(BURST)},
    ).start()
    noisy_key = server.add_source("noisy-app", "mobile")
    quiet_key = server.add_source("quiet-app", "web")
    statuses: dict[str, Counter[str]] = {"noisy": Counter(), "quiet": Counter()}
    acked: set[str] = set()
    refused: set[str] = set()
    retry_after: list[str | None] = []
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def post(client: httpx.Client, who: str, batch_id: str, size: int) -> httpx.Response:
        events = make_batch(batch_id, size)
        answer = client.post(server.url + "/v1/batch", json={"batch": events})
        ids = {event["messageId"] for event in events}
        with lock:
            statuses[who][str(answer.status_code)] += 1
            if answer.status_code == 200:
                acked.update(ids)
            elif answer.status_code == 429:
                refused.update(ids)
                retry_after.append(answer.headers.get("retry-after"))
                codes[answer.json()["code"]] += 1
        return answer

    def noisy(number: int) -> None:  # as fast as it can, never waiting
        with httpx.Client(auth=(noisy_key, ""), timeout=10) as client:
            sequence = 0
            while not stop.is_set():
                post(client, "noisy", f"noisy{number}-{sequence}", BATCH)
                sequence += 1

    def quiet() -> None:  # 5 events every 0.2 s: 25 events/s, under the limit
        with httpx.Client(auth=(quiet_key, ""), timeout=10) as client:
            sequence = 0
            while not stop.is_set():
                post(client, "quiet", f"quiet-{sequence}", 5)
                sequence += 1
                stop.wait(0.2)

    threads = [threading.Thread(target=noisy, args=(n,)) for n in range(3)]
    threads.append(threading.Thread(target=quiet))
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(BLAST_SECONDS)
        stop.set()
        for thread in threads:
            thread.join(15)
        elapsed = time.monotonic() - started
        noisy_acked = {i for i in acked if i.startswith("noisy")}
        with httpx.Client(auth=(noisy_key, ""), timeout=10) as client:
            # honouring Retry-After gets a 200 again; that batch puts the key ~99 events
            # (over 2 s at RATE) in debt, so the next request is refused for sure...
            for attempt in range(10):
                answer = post(client, "noisy", f"noisy-after{attempt}", BATCH)
                if answer.status_code == 200:
                    break
                time.sleep(int(answer.headers["retry-after"]))
            after = answer
            # ...and refused before its body is parsed: a 429, not a 400
            garbage = client.post(server.url + "/v1/batch", content=b"{not json")
        stats = server.cli("stats")
    finally:
        stop.set()
        server.stop()
    stored = read_store(data_dir)
    con = duckdb.connect(str(data_dir / DATABASE_FILE), read_only=True)
    try:
        durable = dict(con.execute(
            "SELECT s.name, c.value FROM counters c JOIN sources s "
            "ON c.name = 'rate_limited:' || s.source_id"
        ).fetchall())  # fmt: skip
    finally:
        con.close()
    per_source = {entry["name"]: entry for entry in stats["sources"]}
    figures = {
        "rate_events_per_s": RATE,
        "burst_events": BURST,
        "seconds": round(elapsed, 2),
        "noisy_answers": dict(statuses["noisy"]),
        "quiet_answers": dict(statuses["quiet"]),
        "noisy_events_acked_in_blast": len(noisy_acked),
        "noisy_events_allowed_at_most": BURST + math.ceil(RATE * elapsed) + BATCH,
        "retry_after_values": sorted(Counter(retry_after).items()),
        "stats_rate_limited": {name: e["rate_limited"] for name, e in per_source.items()},
        "events_stored": stored.rows,
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rate_limit.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("rate limit:", json.dumps(figures))

    assert set(statuses["noisy"]) == {"200", "429"}, statuses["noisy"]
    assert statuses["noisy"]["429"] >= 10
    assert set(statuses["quiet"]) == {"200"}, statuses["quiet"]
    assert statuses["quiet"]["200"] >= 5
    assert garbage.status_code == 429, garbage.text
    assert after.status_code == 200, after.text
    # the bucket holds: what the noisy key got through is the burst plus the rate (one
    # batch of overdraft at most)
    assert BURST <= len(noisy_acked) <= figures["noisy_events_allowed_at_most"]
    # Retry-After is the bucket's: whole seconds, at most one batch of debt at RATE/s
    assert all(value is not None and value.isdigit() for value in retry_after), retry_after
    assert {int(v) for v in retry_after if v} <= set(range(1, math.ceil(BATCH / RATE) + 1))
    assert set(codes) == {"rate_limited"}
    # every 200 stored, nothing of a 429 stored, nothing twice
    assert stored.ids == acked
    assert not refused & stored.ids
    assert stored.rows == stored.distinct_ids
    # counted per key, in stats and durably in the file
    refusals = statuses["noisy"]["429"] + 1  # + the garbage request
    assert per_source["noisy-app"]["rate_limited"] == refusals
    assert per_source["quiet-app"]["rate_limited"] == 0
    assert stats["rate_limited"] == refusals
    assert durable == {"noisy-app": refusals}
