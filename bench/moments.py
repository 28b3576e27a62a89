"""Moments benchmark: from the HTTP ack of a trigger event to the webhook's arrival.

Starts ``python -m seamline --data <tmpdir> serve`` with ``SEAMLINE_ALLOW_DESTINATIONS=
127.0.0.0/8`` and a webhook receiver on 127.0.0.1 (signatures verified with the
``standardwebhooks`` package), then saves ``--rules`` active rules (1,000 by default):

- most watch the background events with filters that rarely match, or with ``unless``
  windows that the background traffic keeps cancelling, so every ingest group is
  evaluated against them (trigger matching, cancellation joins, instance rows);
- ten fire on background events (their webhooks add scheduler and outbox work);
- one, ``bench-trigger``, sends a signed webhook as soon as its trigger is stored.

While sender threads post background batches at ``--rate`` events/s to ``/v1/batch``, the
probe posts one ``Bench Trigger`` event every ``--interval`` seconds and records when its
``200`` came back; the receiver records when the webhook arrived. Latency is arrival minus
ack (it can be slightly negative: the server commits, wakes the scheduler and only then
writes the HTTP answer). Results go to stdout and ``bench/results/moments-<ts>.json``.

    .venv/bin/python bench/moments.py --seconds 30 --rules 1000 --rate 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from seamline.moments.signing import new_secret  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402

BACKGROUND = [f"Background {n}" for n in range(40)] + ["Card Declined", "Payment Succeeded"]


def rules(count: int, receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    if count == 0:  # the baseline: ingest with no moment at all
        return []
    out: list[dict[str, Any]] = [
        {
            "name": "bench-trigger",
            "trigger": {"event": "Bench Trigger"},
            "transactional": True,
            "actions": [{"webhook": {"url": f"{receiver.url}/bench", "secret": secret}}],
        }
    ]
    for n in range(10):  # fire on background traffic: real scheduler and outbox work
        out.append(
            {
                "name": f"busy-{n}",
                "trigger": {"event": BACKGROUND[n]},
                "unless": {"event": "Payment Succeeded", "within": "2s"},
                "reentry": {"cooldown": "1h"},
                "actions": [{"webhook": {"url": f"{receiver.url}/busy", "secret": secret}}],
            }
        )
    n = 0
    while len(out) < count:
        event = BACKGROUND[n % len(BACKGROUND)]
        spec: dict[str, Any] = {
            "name": f"quiet-{n}",
            "trigger": {"event": event, "where": {"properties.amount": {"gt": 1_000_000 + n}}},
            "actions": [{"webhook": {"url": f"{receiver.url}/never", "secret": secret}}],
        }
        if n % 3 == 0:
            spec["unless"] = {"event": BACKGROUND[(n + 1) % len(BACKGROUND)], "within": "5m"}
            spec["exit"] = ["Payment Succeeded"]
        out.append(spec)
        n += 1
    return out


def background_event(rng: random.Random) -> dict[str, Any]:
    return {
        "type": "track",
        "event": rng.choice(BACKGROUND),
        "messageId": str(uuid.uuid4()),
        "userId": f"user-{rng.randrange(20_000)}",
        "properties": {"amount": round(rng.uniform(1, 500), 2), "plan": rng.choice("abc")},
        "timestamp": datetime.now(UTC).isoformat(),
        "context": {"timezone": "Europe/Paris", "library": {"name": "bench"}},
    }


def sender(
    url: str, key: str, rate: float, stop: threading.Event, sent: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    batch = 20
    gap = batch / rate
    with httpx.Client(auth=(key, ""), timeout=30) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            events = [background_event(rng) for _ in range(batch)]
            answer = client.post(url + "/v1/batch", json={"batch": events})
            if answer.status_code == 200:
                sent[0] += batch
            next_at += gap
            time.sleep(max(0.0, next_at - time.monotonic()))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500, help="background events/s")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between probes")
    args = parser.parse_args()

    secret = new_secret()
    arrivals: dict[str, float] = {}
    receiver = Receiver(secret)

    def arrived(item: Any) -> None:
        if item.path == "/bench":
            arrivals[item.json()["trigger"]["message_id"]] = item.at

    receiver.on_request = arrived
    receiver.start()
    work = Path(tempfile.mkdtemp(prefix="seamline-bench-moments-"))
    data = work / "data"
    port = free_port()
    env = {
        **os.environ,
        "SEAMLINE_ALLOW_DESTINATIONS": "127.0.0.0/8",
        "SEAMLINE_MOMENTS_GRACE_SECONDS": "2",
    }  # the busy rules fire during the run
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "seamline", "--data", str(data), "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token = json.loads((data / "server.json").read_text())["token"]
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        key = admin.post("/api/sources", json={"name": "bench", "channel": "mobile"}).json()[
            "write_key"
        ]
        started = time.monotonic()
        for spec in rules(args.rules, receiver, secret):
            answer = admin.post("/api/moments", json={"definition": spec})
            assert answer.status_code == 201, answer.text
        saving = time.monotonic() - started
        print(f"saved {args.rules} rules in {saving:.1f} s", flush=True)

        stop = threading.Event()
        sent = [0]
        threads = [
            threading.Thread(
                target=sender, args=(url, key, args.rate / args.senders, stop, sent, n), daemon=True
            )
            for n in range(args.senders)
        ]
        for thread in threads:
            thread.start()
        time.sleep(2)  # let the background load settle
        acks: dict[str, tuple[float, float]] = {}
        probe = httpx.Client(auth=(key, ""), timeout=30)
        load_started, end = time.monotonic(), time.monotonic() + args.seconds
        while time.monotonic() < end:
            message_id = f"probe-{uuid.uuid4()}"
            event = {
                "type": "track",
                "event": "Bench Trigger",
                "messageId": message_id,
                "userId": f"probe-{message_id}",
                "timestamp": datetime.now(UTC).isoformat(),
            }
            before = time.monotonic()
            answer = probe.post(url + "/v1/batch", json={"batch": [event]})
            if answer.status_code == 200:
                acks[message_id] = (before, time.monotonic())
            time.sleep(max(0.0, args.interval - (time.monotonic() - before)))
        wait_until = time.monotonic() + 10
        while (
            args.rules
            and time.monotonic() < wait_until
            and len(arrivals.keys() & acks.keys()) < len(acks)
        ):
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(10)
        elapsed = time.monotonic() - load_started
        from_ack = [(arrivals[m] - ack) * 1000 for m, (_, ack) in acks.items() if m in arrivals]
        from_send = [(arrivals[m] - s) * 1000 for m, (s, _) in acks.items() if m in arrivals]
        ack_ms = [(ack - s) * 1000 for s, ack in acks.values()]
        stats = admin.get("/api/moments/stats").json()["moments"]
        busy_sent = sum(m["sent"] for m in stats if m["name"].startswith("busy-"))
        triggered = sum(m["triggered"] for m in stats)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        receiver.stop()
        log.close()

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rules": args.rules,
        "background_events_per_second": round(sent[0] / elapsed, 1),
        "probes": len(acks),
        "delivered": len(from_ack),
        "verified": all(r.verified for r in receiver.received),
        "instances_started": triggered,
        "background_webhooks_sent": busy_sent,
        "rules_saved_in_seconds": round(saving, 1),
        "ack_ms": {
            "p50": round(percentile(ack_ms, 50), 1),
            "p99": round(percentile(ack_ms, 99), 1),
        },
        "ack_to_webhook_ms": {}
        if not from_ack
        else {
            "p50": round(percentile(from_ack, 50), 1),
            "p90": round(percentile(from_ack, 90), 1),
            "p99": round(percentile(from_ack, 99), 1),
            "max": round(max(from_ack), 1),
            "mean": round(statistics.fmean(from_ack), 1),
        },
        "send_to_webhook_ms": {}
        if not from_send
        else {
            "p50": round(percentile(from_send, 50), 1),
            "p99": round(percentile(from_send, 99), 1),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"moments-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
