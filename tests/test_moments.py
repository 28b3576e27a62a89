"""Moments end to end: a real ``seamline serve``, real webhook receivers on 127.0.0.1.

Every receiver verifies signatures with the independent ``standardwebhooks`` package and
deduplicates on ``webhook-id``. Traffic goes to 127.0.0.1 only: the server runs with
``SEAMLINE_ALLOW_DESTINATIONS=127.0.0.0/8``; hostile destinations are only refused.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from seamline.moments.signing import new_secret
from tests.conftest import Server, run_cli
from tests.webhook_receiver import Receiver

SECRET = new_secret()
ENV = {
    "SEAMLINE_ALLOW_DESTINATIONS": "127.0.0.0/8",
    "SEAMLINE_MOMENTS_GRACE_SECONDS": "4",
    "SEAMLINE_MOMENTS_POLL_MS": "50",
    "SEAMLINE_MOMENTS_RETRY_BASE_MS": "300",
    "SEAMLINE_MOMENTS_BREAKER_FAILURES": "50",
}


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(UTC)


def track(event: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "messageId": f"m-{uuid.uuid4()}",
        "timestamp": iso(at or now()),
        **fields,
    }


def send(server: Server, key: str, *events: dict[str, Any]) -> None:
    answer = httpx.post(
        server.url + "/v1/batch", json={"batch": list(events)}, auth=(key, ""), timeout=10
    )
    assert answer.status_code == 200, answer.text


def hook(receiver: Receiver, path: str) -> dict[str, Any]:
    return {"webhook": {"url": f"{receiver.url}{path}", "secret": SECRET}}


def api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    """The admin API with the server's per-run local token (the CLI takes ~3 s to start)."""
    token = json.loads((server.data / "server.json").read_text())["token"]
    answer = httpx.request(
        method,
        server.url + path,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def add_rule(server: Server, tmp: Path, spec: dict[str, Any], *, cli: bool = False) -> Any:
    if not cli:
        return api(server, "POST", "/api/moments", json={"definition": spec})
    path = tmp / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return server.cli("moments", "add", str(path))


def deliveries(server: Server, moment: str | None = None, failed: bool = False) -> Any:
    params: dict[str, Any] = {"failed": failed, **({"moment": moment} if moment else {})}
    return api(server, "GET", "/api/deliveries", params=params)


def wait_until(check: Any, timeout: float = 15, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


@pytest.fixture
def moments_server(data_dir: Path) -> Iterator[Server]:
    srv = Server(data_dir, env=dict(ENV)).start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET).start()
    yield rec
    rec.stop()


def stats_of(server: Server) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in api(server, "GET", "/api/moments/stats")["moments"]}


def test_moments_fire_once_unless_cancels_caps_quiet_hours_and_fallback(
    moments_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    server = moments_server
    key = server.add_source("ios-app", "mobile")
    receiver.answers["/fail"] = (400, {})
    local = now().astimezone(ZoneInfo("Pacific/Auckland"))
    quiet = {
        "start": (local - timedelta(hours=1)).strftime("%H:%M"),
        "end": (local + timedelta(hours=1)).strftime("%H:%M"),
    }
    add_rule(
        server,
        tmp_path,
        {
            "name": "declined-help",
            "trigger": {"event": "Card Declined"},
            "unless": {"event": "Payment Succeeded", "within": "2s"},
            "actions": [hook(receiver, "/declined")],
        },
        cli=True,
    )
    add_rule(
        server,
        tmp_path,
        {
            "name": "gate-change",
            "trigger": {"event": "Gate Changed"},
            "cap": {"per": "1d", "max": 1},
            "actions": [hook(receiver, "/gate")],
        },
    )
    add_rule(
        server,
        tmp_path,
        {
            "name": "evening-offer",
            "trigger": {"event": "Offer Ready"},
            "quiet_hours": quiet,
            "actions": [hook(receiver, "/offer")],
        },
    )
    add_rule(
        server,
        tmp_path,
        {
            "name": "offer-receipt",
            "trigger": {"event": "Offer Ready"},
            "quiet_hours": quiet,
            "transactional": True,
            "actions": [
                {
                    "webhook": {
                        "url": f"{receiver.url}/receipt",
                        "secret": SECRET,
                        "body": '{"email": {{ person.traits.email | tojson }}, '
                        '"amount": {{ event.properties.amount | tojson }}, '
                        '"moment": "{{ moment.name }}"}',
                    }
                }
            ],
        },
    )
    add_rule(
        server,
        tmp_path,
        {
            "name": "boarding",
            "trigger": {"event": "Boarding", "where": {"properties.gate": "B7"}},
            "actions": [
                hook(receiver, "/fail"),
                {
                    "apprise": {
                        "url": f"json://127.0.0.1:{receiver.port}/apprise",
                        "title": "Boarding {{ event.properties.gate }}",
                    },
                    "fallback": True,
                },
            ],
        },
    )

    t0 = now()
    send(
        server,
        key,
        track("Card Declined", t0, userId="p1"),
        track("Card Declined", t0 + timedelta(milliseconds=100), userId="p1"),  # absorbed
        track("Card Declined", t0, userId="p2"),
        track("Payment Succeeded", t0 + timedelta(milliseconds=500), userId="p2"),
        track("Card Declined", t0, userId="p3"),
        track("Boarding", userId="p7", properties={"gate": "A1"}),  # filtered out
        track("Boarding", userId="p7", properties={"gate": "B7"}),
    )
    # identity first: an anonymous trigger, cancelled by the merged person's payment
    send(
        server,
        key,
        {
            "type": "identify",
            "userId": "u4",
            "anonymousId": "web-4",
            "messageId": "id-4",
            "timestamp": iso(t0),
        },
    )
    send(server, key, track("Card Declined", t0, anonymousId="app-4"))
    send(
        server,
        key,
        track("Payment Succeeded", t0 + timedelta(seconds=1), userId="u4", anonymousId="app-4"),
    )
    # quiet hours in the person's time zone, and a transactional rule that ignores them
    zone = {"timezone": "Pacific/Auckland"}
    send(
        server,
        key,
        {
            "type": "identify",
            "userId": "p6",
            "messageId": "id-6",
            "traits": {"email": "p6@example.com"},
            "context": zone,
            "timestamp": iso(t0),
        },
        track("Offer Ready", userId="p6", properties={"amount": 42}, context=zone),
    )
    # a late batch: p3's payment happened inside the window (2 s) but arrives after it
    # closed, within the grace period (4 s)
    time.sleep(max(0.0, 2.3 - (now() - t0).total_seconds()))
    send(server, key, track("Payment Succeeded", t0 + timedelta(seconds=1), userId="p3"))
    late_by = (now() - t0).total_seconds()
    assert 2.0 < late_by < 5.5, f"the late batch was sent {late_by:.1f} s after the trigger"
    # the frequency cap: a second gate change the same day is capped
    send(server, key, track("Gate Changed", userId="p5"))
    assert receiver.wait_for("/gate", 1, timeout=10)
    send(server, key, track("Gate Changed", userId="p5"))

    declined = receiver.wait_for("/declined", 1, timeout=15)
    time.sleep(max(0.0, 7.0 - (now() - t0).total_seconds()))  # every window + grace is over
    declined = receiver.for_path("/declined")
    assert len(declined) == 1, "fires once per moment; p2, p3 (late) and p4 (merged) cancel"
    body = declined[0].json()
    assert declined[0].verified and body["moment"] == "declined-help"
    assert (
        body["trigger"]["event"] == "Card Declined"
        and body["delivery_id"] == declined[0].webhook_id
    )
    assert len(receiver.for_path("/gate")) == 1
    assert receiver.for_path("/offer") == []
    receipt = receiver.wait_for("/receipt", 1)
    assert [r.json() for r in receipt] == [
        {"email": "p6@example.com", "amount": 42, "moment": "offer-receipt"}
    ]
    assert len(receiver.wait_for("/fail", 1)) == 1
    apprise = receiver.wait_for("/apprise", 1)
    assert len(apprise) == 1 and apprise[0].json()["title"] == "Boarding B7"
    assert apprise[0].headers.get("idempotency-key", "").startswith("msg_")

    wait_until(lambda: stats_of(server)["boarding"]["sent"] == 1)
    stats = {m["name"]: m for m in server.cli("moments", "stats")["moments"]}
    assert {
        k: stats["declined-help"][k]
        for k in ("triggered", "cancelled_unless", "sent", "failed", "absorbed")
    } == {"triggered": 4, "cancelled_unless": 3, "sent": 1, "failed": 0, "absorbed": 1}
    assert stats["gate-change"]["capped"] == 1 and stats["gate-change"]["sent"] == 1
    assert stats["evening-offer"]["quiet_hours"] == 1 and stats["evening-offer"]["waiting"] == 1
    assert stats["offer-receipt"]["sent"] == 1
    assert stats["boarding"]["triggered"] == 1 and stats["boarding"]["failed"] == 1

    dead = deliveries(server, failed=True)
    assert [(d["moment"], d["last_status"]) for d in dead] == [("boarding", 400)]
    dry = server.cli("moments", "test", "declined-help", "--person", "p2")
    assert [m["outcome"] for m in dry["moments"]] == ["cancelled"]
    assert dry["moments"][0]["by"]["event"] == "Payment Succeeded"
    listed = api(server, "GET", "/api/moments")
    assert {r["name"] for r in listed} >= {"declined-help", "boarding"}
    assert SECRET not in json.dumps(listed)
    # hostile destinations are refused when saved, whatever the face
    hostile = tmp_path / "hostile.json"
    hostile.write_text(
        json.dumps(
            {
                "name": "steal",
                "trigger": {"event": "X"},
                "actions": [
                    {
                        "webhook": {
                            "url": "http://169.254.169.254/latest/meta-data/",
                            "secret": SECRET,
                        }
                    }
                ],
            }
        )
    )
    refused = run_cli(server.data, "moments", "add", str(hostile), check=False)
    assert refused.returncode == 1 and "metadata" in refused.stderr
    token = json.loads((server.data / "server.json").read_text())["token"]
    answer = httpx.post(
        server.url + "/api/moments",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "definition": {
                "name": "steal",
                "trigger": {"event": "X"},
                "actions": [{"webhook": {"url": "https://10.1.2.3/x", "secret": SECRET}}],
            }
        },
    )
    assert answer.status_code == 400 and answer.json()["code"] == "destination_refused"
    reader = api(server, "POST", "/api/tokens", json={"name": "r", "scope": "read"})["token"]
    assert (
        httpx.get(
            server.url + "/api/moments", headers={"Authorization": f"Bearer {reader}"}
        ).status_code
        == 403
    )


def test_retries_until_the_receiver_is_back_honours_retry_after_and_replays_dead_letters(
    moments_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    server = moments_server
    key = server.add_source("web", "web")
    slow = Receiver(SECRET, fail_first=2, retry_after="1").start()
    receiver.answers["/reject"] = (400, {})
    try:
        add_rule(
            server,
            tmp_path,
            {"name": "ping", "trigger": {"event": "Ping"}, "actions": [hook(receiver, "/ping")]},
        )
        add_rule(
            server,
            tmp_path,
            {"name": "slow", "trigger": {"event": "Slow"}, "actions": [hook(slow, "/slow")]},
        )
        add_rule(
            server,
            tmp_path,
            {
                "name": "reject",
                "trigger": {"event": "Reject"},
                "actions": [hook(receiver, "/reject")],
            },
        )
        receiver.stop()  # down: connections refused
        send(server, key, track("Ping", userId="w1"), track("Slow", userId="w1"))
        retried = wait_until(lambda: [d for d in deliveries(server, "ping") if d["attempts"] >= 2])
        assert retried and retried[0]["status"] == "pending"
        assert retried[0]["last_error"] == "ConnectError"
        receiver.start()  # back on the same port
        got = receiver.wait_for("/ping", 1)
        assert len(got) == 1 and got[0].verified
        assert got[0].webhook_id == retried[0]["delivery_id"]
        delivered = wait_until(
            lambda: [d for d in deliveries(server, "ping") if d["status"] == "delivered"]
        )
        assert delivered[0]["attempts"] >= 3

        attempts = slow.wait_for("/slow", 3, timeout=15)
        assert len(attempts) == 3 and len({a.webhook_id for a in attempts}) == 1
        assert all(a.verified for a in attempts)
        assert attempts[1].at - attempts[0].at >= 0.95  # Retry-After: 1 beats a 0.3 s backoff
        assert attempts[2].at - attempts[1].at >= 0.95

        receiver.answers["/reject"] = (400, {})
        send(server, key, track("Reject", userId="w2"))
        dead = wait_until(lambda: deliveries(server, failed=True))
        assert [(d["moment"], d["status"], d["attempts"]) for d in dead] == [
            ("reject", "failed", 1)
        ]
        del receiver.answers["/reject"]
        replayed = server.cli("moments", "replay", dead[0]["delivery_id"])
        assert replayed["status"] == "pending" and replayed["replays"] == 1
        again = receiver.wait_for("/reject", 2)
        assert [r.webhook_id for r in again] == [dead[0]["delivery_id"]] * 2
        assert wait_until(lambda: deliveries(server, failed=True) == [])
        stats = stats_of(server)
        assert stats["reject"]["sent"] == 1 and stats["ping"]["sent"] == 1
    finally:
        slow.stop()


def test_idle_scheduler_and_outbox_back_off_yet_are_woken_at_once(
    moments_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    """With nothing to do, the scheduler and the outbox look at the store less and less
    often (up to IDLE_POLL_MAX, 2 s, here 40 times the 50 ms poll); whatever creates work
    still wakes them, so an idle server acts as fast as a busy one."""
    from seamline.moments.runtime import IDLE_POLL_MAX

    server = moments_server
    key = server.add_source("app", "mobile")
    add_rule(server, tmp_path, {"name": "now", "trigger": {"event": "Now"},
                                "actions": [hook(receiver, "/now")]})  # fmt: skip
    add_rule(server, tmp_path, {"name": "later", "trigger": {"event": "Later"},
                                "unless": {"event": "Never", "within": "1s"},
                                "actions": [hook(receiver, "/later")]})  # fmt: skip
    time.sleep(2 * IDLE_POLL_MAX + 0.5)  # both loops are at their longest sleep by now
    sent = time.monotonic()
    send(server, key, track("Now", userId="idle-1"), track("Later", userId="idle-1"))
    assert receiver.wait_for("/now", 1, timeout=10)
    now_after = time.monotonic() - sent
    assert receiver.wait_for("/later", 1, timeout=10)
    later_after = time.monotonic() - sent
    # the trigger hook wakes the outbox: far sooner than a 2 s sleep would allow
    assert now_after < 1.0, now_after
    # the timer is due 5 s after the event (the 1 s window + the 4 s grace): later than the
    # longest sleep, so the scheduler's next look finds it, and it fires on time
    assert 4.8 <= later_after < 5.9, later_after


def test_kill_9_between_decision_and_delivery_delivers_once_per_idempotency_key(
    moments_server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    import threading

    server = moments_server
    key = server.add_source("app", "mobile")
    down = Receiver(SECRET).start()
    down.stop()  # refused until after the crash
    receiver.hang = threading.Event()  # the first attempt is in flight when the server dies
    add_rule(
        server,
        tmp_path,
        {"name": "in-flight", "trigger": {"event": "Crash"}, "actions": [hook(receiver, "/crash")]},
    )
    add_rule(
        server,
        tmp_path,
        {"name": "decided", "trigger": {"event": "Crash Down"}, "actions": [hook(down, "/down")]},
    )
    add_rule(
        server,
        tmp_path,
        {
            "name": "timer",
            "trigger": {"event": "Crash Timer"},
            "unless": {"event": "Never", "within": "1s"},
            "actions": [hook(down, "/timer")],
        },
    )
    send(
        server,
        key,
        track("Crash", userId="k1"),
        track("Crash Down", userId="k1"),
        track("Crash Timer", userId="k1"),
    )
    assert receiver.wait_for("/crash", 1)
    assert wait_until(lambda: [d for d in deliveries(server, "decided") if d["attempts"] >= 1])
    assert stats_of(server)["timer"]["waiting"] == 1
    server.kill()  # SIGKILL: decided, not delivered; one attempt in flight; a timer waiting
    receiver.hang.set()
    receiver.hang = None
    down.start()
    server.start()
    again = receiver.wait_for("/crash", 2)
    assert len(again) == 2 and len(receiver.unique("/crash")) == 1  # the receiver dedupes
    assert len(down.wait_for("/down", 1)) == 1
    assert len(down.wait_for("/timer", 1)) == 1  # the durable timer fired after the restart
    for name in ("in-flight", "decided", "timer"):
        rows = wait_until(
            lambda name=name: [d for d in deliveries(server, name) if d["status"] == "delivered"]
        )
        assert len(rows) == 1, f"{name}: one decision, one delivery row"
        assert len(deliveries(server, name)) == 1
    time.sleep(0.5)
    assert len(receiver.unique("/crash")) == 1 and len(down.unique("/down")) == 1
    assert all(r.verified for r in receiver.received + down.received)
    down.stop()
