"""Moments benchmark: from the HTTP ack of a trigger event to the webhook's arrival.

Starts ``python -m seamline --data <tmpdir> serve`` with ``SEAMLINE_ALLOW_DESTINATIONS=
127.0.0.0/8`` and a webhook receiver on 127.0.0.1 (signatures verified with the
``standardwebhooks`` package), then saves ``--rules`` active rules (1,000 by default):

- most watch the background events with filters that rarely match, or with ``unless``
  windows that the background traffic keeps cancelling, so every ingest group is
  evaluated against them (trigger matching, cancellation joins, instance rows);
- ten fire on background events (their webhooks add scheduler and outbox work): about
  ``--busy-fraction`` (1%) of background events fire one;
- one, ``bench-trigger``, sends a signed webhook as soon as its trigger is stored.

The background load is ``bench/ingest.py``'s load generator, paced: a separate process posts
pre-built 100-event batch bodies (analytics-swift-like contexts, the background event names,
20,000 users) from raw keep-alive sockets at a fixed rate, only the ``messageId``\\s change
per request. By default the rate is half of the durable ingest capacity measured by the
newest ``bench/results/ingest-*.json`` (a default-configuration run); ``--capacity N`` or
``--rate N`` set it by hand. Meanwhile the probe posts one ``Bench Trigger`` event every
``--interval`` seconds and records when its ``200`` came back; the receiver records when the
webhook arrived. Latency is arrival minus ack (it can be slightly negative: the server
commits, wakes the scheduler and only then writes the HTTP answer). Results go to stdout
and ``bench/results/moments-<ts>.json``.

    flock /tmp/seamline-bench.lock .venv/bin/python bench/moments.py --seconds 30 --rules 1000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402  (bench/ingest.py: load generator, server process, capacity)

from seamline.moments.signing import new_secret  # noqa: E402
from tests.webhook_receiver import Receiver  # noqa: E402

BACKGROUND = [f"Background {n}" for n in range(40)] + ["Card Declined", "Payment Succeeded"]
BUSY_RULES = 10
USERS = 20_000
BATCH = 100
TEMPLATES = 400  # distinct bodies: 400 x 100 events over 20,000 users
AMOUNT_MAX = 500.0


# -- rules ----------------------------------------------------------------------------------


def busy_threshold(busy_fraction: float) -> float:
    """``properties.amount`` above which a busy rule's trigger matches, so that about
    ``busy_fraction`` of all background events start a busy moment (amounts are uniform
    over 1..500 and the ten busy rules watch 10 of the 42 background names)."""
    share = min(1.0, busy_fraction * len(BACKGROUND) / BUSY_RULES)
    return AMOUNT_MAX - share * (AMOUNT_MAX - 1)


def rules(
    count: int, receiver: Receiver, secret: str, busy_fraction: float
) -> list[dict[str, Any]]:
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
    threshold = busy_threshold(busy_fraction)
    for n in range(BUSY_RULES):  # fire on background traffic: real scheduler and outbox work
        out.append(
            {
                "name": f"busy-{n}",
                "trigger": {
                    "event": BACKGROUND[n],
                    "where": {"properties.amount": {"gt": threshold}},
                },
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


# -- background load: bench/ingest.py's raw-socket client, paced --------------------------------


def build_templates(write_key: str, seed: int) -> list[list[bytes]]:
    """100-event batch bodies split at the messageId placeholder (as ``ingest``'s): 3-8
    users of the 20,000 per batch, each with an analytics-swift context, background events
    with an ``amount``. ``sentAt`` makes the server date them a second or two before now."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for _ in range(TEMPLATES):
        users = []
        for _ in range(rng.randint(3, 8)):
            user = ingest._user(rng)
            user["userId"] = f"user-{rng.randrange(USERS)}"
            users.append(user)
        start = now - timedelta(seconds=rng.uniform(1, 2))
        events = []
        for i in range(BATCH):
            user = rng.choice(users)
            events.append(
                {
                    "type": "track",
                    "event": rng.choice(BACKGROUND),
                    "messageId": ingest.PLACEHOLDER.decode() + f"-{i:03d}",
                    "userId": user["userId"],
                    "anonymousId": user["anonymousId"],
                    "properties": {
                        "amount": round(rng.uniform(1, AMOUNT_MAX), 2),
                        "plan": rng.choice("abc"),
                    },
                    "timestamp": ingest._iso(start + timedelta(milliseconds=10 * i)),
                    "context": user["context"],
                    "integrations": {},
                }
            )
        body = {"batch": events, "sentAt": ingest._iso(now), "writeKey": write_key}
        out.append(json.dumps(body, separators=(",", ":")).encode().split(ingest.PLACEHOLDER))
    return out


def _load_process(port: int, write_key: str, rate: float, clients: int, queue: Any,
                  control: Any) -> None:  # fmt: skip
    """Builds the bodies, says "ready", takes (start_at, stop_at), runs, reports."""
    templates = build_templates(write_key, seed=11)
    queue.put("ready")
    start_at, stop_at = control.get(timeout=120)
    head = ingest.request_head(port, write_key)
    gap = clients * BATCH / rate
    results = [ingest.ClientResult() for _ in range(clients)]
    acked_at = [array("d") for _ in range(clients)]
    run_id = uuid.uuid4().hex[:8]
    cpu0 = time.process_time()
    pool = [
        threading.Thread(
            target=ingest.client_thread,
            args=(port, head, templates, f"{run_id}-{n:02d}", BATCH,
                  start_at + n * gap / clients, stop_at, results[n]),
            kwargs={"gap": gap, "acked_at": acked_at[n]},
        )
        for n in range(clients)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    cpu = time.process_time() - cpu0
    for result in results:
        result.cpu_seconds = cpu / clients
    queue.put(
        [{**asdict(r), "acked_at": a.tobytes()} for r, a in zip(results, acked_at, strict=True)]
    )


def latest_capacity() -> tuple[float, str]:
    """Durable events/s of the newest verified default-configuration ``ingest`` run."""
    for path in sorted(RESULTS.glob("ingest-*.json"), reverse=True):
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = found.get("config", {})
        if (
            found.get("verified")
            and found.get("durable_events_per_s")
            and not config.get("server_env")
            and not config.get("duckdb_set")
            and not config.get("server_exec")
            and config.get("batch_size", BATCH) == BATCH
        ):
            return float(found["durable_events_per_s"]), path.name
    raise SystemExit(
        "no ingest result in bench/results/: run bench/ingest.py first, or pass --capacity N "
        "or --rate N"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="probing time (30)")
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=None,
        help="background events/s (default: --fraction of the ingest capacity)",
    )  # fmt: skip
    parser.add_argument(
        "--capacity", default="latest",
        help="ingest capacity in events/s, or 'latest': the newest bench/results/ingest-*.json",
    )  # fmt: skip
    parser.add_argument("--fraction", type=float, default=0.5, help="of the capacity (0.5)")
    parser.add_argument("--clients", type=int, default=16, help="background connections (16)")
    parser.add_argument(
        "--busy-fraction", type=float, default=0.01,
        help="share of background events that start a busy moment with a webhook (0.01)",
    )  # fmt: skip
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between probes")
    parser.add_argument("--settle", type=float, default=3, help="load before probing (3 s)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra server environment")  # fmt: skip
    parser.add_argument("--label", default="", help="free text stored with the results")
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="SECONDS",
        help="first wait up to this long for other load to drop under 0.3 cores",
    )  # fmt: skip
    args = parser.parse_args()
    other_before = ingest.wait_for_idle(args.wait_idle) if args.wait_idle else None
    if other_before is not None:
        print(f"other load before start: {other_before:.2f} cores", flush=True)

    capacity: float | None = None
    capacity_source = None
    if args.rate is None:
        if args.capacity == "latest":
            capacity, capacity_source = latest_capacity()
        else:
            capacity, capacity_source = float(args.capacity), "--capacity"
        rate = capacity * args.fraction
    else:
        rate = args.rate
    print(
        f"background target {rate:,.0f} events/s"
        + (f" = {args.fraction:g} x {capacity:,.0f} ({capacity_source})" if capacity else ""),
        flush=True,
    )

    secret = new_secret()
    arrivals: dict[str, float] = {}
    receiver = Receiver(secret)

    def arrived(item: Any) -> None:
        if item.path == "/bench":
            arrivals[item.json()["trigger"]["message_id"]] = item.at

    receiver.on_request = arrived
    receiver.start()
    work = Path(tempfile.mkdtemp(prefix="seamline-bench-moments-"))
    env = {
        "SEAMLINE_ALLOW_DESTINATIONS": "127.0.0.0/8",
        "SEAMLINE_MOMENTS_GRACE_SECONDS": "2",  # the busy rules fire during the run
        **dict(item.split("=", 1) for item in args.env),
    }
    server = ingest.ServerProcess(work / "data", ingest.free_port(), env,
                                  {"duckdb_set": [], "server_exec": ""})  # fmt: skip
    url = f"http://127.0.0.1:{server.port}"
    try:
        server.start()
        token = json.loads((server.data / "server.json").read_text())["token"]
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        key = admin.post("/api/sources", json={"name": "bench", "channel": "mobile"}).json()[
            "write_key"
        ]
        started = time.monotonic()
        for spec in rules(args.rules, receiver, secret, args.busy_fraction):
            answer = admin.post("/api/moments", json={"definition": spec})
            assert answer.status_code == 201, answer.text
        saving = time.monotonic() - started
        print(f"saved {args.rules} rules in {saving:.1f} s", flush=True)

        ctx = mp.get_context("spawn")
        queue, control = ctx.Queue(), ctx.Queue()
        loader = ctx.Process(
            target=_load_process, args=(server.port, key, rate, args.clients, queue, control)
        )
        loader.start()
        assert queue.get(timeout=120) == "ready"  # spawned, bodies built
        load_start = time.monotonic() + 0.3
        probe_start = load_start + args.settle
        load_stop = probe_start + args.seconds
        control.put((load_start, load_stop))
        while time.monotonic() < probe_start:
            time.sleep(0.01)
        cpu0, busy0, wall0 = sum(server.cpu_seconds()), ingest.busy_cpu_seconds(), time.monotonic()
        acks: dict[str, tuple[float, float]] = {}
        probe = httpx.Client(auth=(key, ""), timeout=30)
        probe_statuses: dict[str, int] = {}

        def send_probe() -> None:
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
            after = time.monotonic()
            with lock:
                code = str(answer.status_code)
                probe_statuses[code] = probe_statuses.get(code, 0) + 1
                if answer.status_code == 200:
                    acks[message_id] = (before, after)

        # probes go out every --interval whatever their ack takes (a few in flight at once)
        lock = threading.Lock()
        with ThreadPoolExecutor(max_workers=16) as pool:
            next_probe = probe_start
            while next_probe < load_stop:
                time.sleep(max(0.0, next_probe - time.monotonic()))
                pool.submit(send_probe)
                next_probe += args.interval
        server_cpu = sum(server.cpu_seconds()) - cpu0
        busy = ingest.busy_cpu_seconds() - busy0
        wall = time.monotonic() - wall0
        reported = queue.get(timeout=120)
        acked_times = array("d")
        for r in reported:
            acked_times.frombytes(r.pop("acked_at"))
        load = [ingest.ClientResult(**r) for r in reported]
        during = sum(1 for t in acked_times if probe_start <= t <= load_stop)
        loader.join(30)
        wait_until = time.monotonic() + 10
        while (
            args.rules
            and time.monotonic() < wait_until
            and len(arrivals.keys() & acks.keys()) < len(acks)
        ):
            time.sleep(0.05)
        from_ack = [(arrivals[m] - ack) * 1000 for m, (_, ack) in acks.items() if m in arrivals]
        from_send = [(arrivals[m] - s) * 1000 for m, (s, _) in acks.items() if m in arrivals]
        ack_ms = [(ack - s) * 1000 for s, ack in acks.values()]
        stats = admin.get("/api/moments/stats").json()["moments"]
        busy_sent = sum(m["sent"] for m in stats if m["name"].startswith("busy-"))
        triggered = sum(m["triggered"] for m in stats)
        cancelled = sum(m["cancelled_unless"] + m["cancelled_exit"] for m in stats)
        hwm_kb = server.read_hwm()
    finally:
        if server.proc is not None:
            try:
                server.stop()
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
        receiver.stop()

    statuses: dict[str, int] = {}
    for r in load:
        for name, value in r.statuses.items():
            statuses[name] = statuses.get(name, 0) + value
    background_lat: list[float] = []
    for r in load:
        lat = array("d")
        lat.frombytes(r.latencies)
        background_lat.extend(lat)
    background_lat.sort()
    window = max(r.last_answer for r in load) - min(r.first_send for r in load)
    acked = sum(r.acked_events for r in load)
    achieved = acked / window if window > 0 else 0.0
    client_cpu = sum(r.cpu_seconds for r in load)

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q), 1)

    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "revision": ingest.git_revision(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rules": args.rules,
        "capacity_events_per_s": capacity,
        "capacity_source": capacity_source,
        "fraction": args.fraction if capacity else None,
        "target_events_per_s": round(rate, 1),
        "background_events_per_s": round(achieved, 1),
        # acknowledged background events while the probes ran (the figure to compare)
        "background_events_per_s_while_probing": round(during * BATCH / args.seconds, 1),
        "background_clients": args.clients,
        "background_statuses": statuses,
        "background_503s": statuses.get("503", 0),
        "background_client_errors": sum(r.errors for r in load),
        "background_ack_ms": {}
        if not background_lat
        else {
            "p50": round(percentile(background_lat, 50) * 1000, 1),
            "p99": round(percentile(background_lat, 99) * 1000, 1),
            "max": round(background_lat[-1] * 1000, 1),
        },
        "probes": len(acks),
        "probe_statuses": probe_statuses,
        "delivered": len(from_ack),
        "verified": all(r.verified for r in receiver.received),
        "instances_started": triggered,
        "instances_cancelled": cancelled,
        "background_webhooks_sent": busy_sent,
        "busy_fraction": args.busy_fraction,
        "rules_saved_in_seconds": round(saving, 1),
        "ack_ms": {"p50": ms(ack_ms, 50), "p99": ms(ack_ms, 99)} if ack_ms else {},
        "ack_to_webhook_ms": {}
        if not from_ack
        else {
            "p50": ms(from_ack, 50),
            "p90": ms(from_ack, 90),
            "p99": ms(from_ack, 99),
            "max": round(max(from_ack), 1),
            "mean": round(statistics.fmean(from_ack), 1),
        },
        "send_to_webhook_ms": {}
        if not from_send
        else {"p50": ms(from_send, 50), "p99": ms(from_send, 99)},
        "server_cpu_cores": round(server_cpu / wall, 2),
        # server CPU per background event while probing: comparable under other load
        "server_cpu_us_per_event": round(1e6 * server_cpu / (during * BATCH), 1)
        if during
        else None,
        "load_client_cpu_cores": round(client_cpu / window, 2) if window > 0 else None,
        # the whole machine: server, load generator, probe, receiver and anyone else
        "machine_busy_cores": round(busy / wall, 2),
        "other_load_before_cores": None if other_before is None else round(other_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "server_rss_peak_mib": round(hwm_kb / 1024, 1) if hwm_kb else None,
        "targets_met": bool(from_ack)
        and len(from_ack) == len(acks)
        and percentile(from_ack, 50) <= 100
        and percentile(from_ack, 99) <= 500,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"moments-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
