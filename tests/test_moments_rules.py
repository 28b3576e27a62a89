"""Moments without a server: rule parsing, filters, signatures, the SSRF guard, timing.

SSRF refusal tests make no network traffic at all: host names go through a stub resolver
(``localhost`` aside, which the system resolves from /etc/hosts), and the only requests
sent go to a receiver on 127.0.0.1.
"""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from standardwebhooks import Webhook

from seamline.errors import BadRequest, SeamlineError
from seamline.moments import signing
from seamline.moments.decisions import quiet_until
from seamline.moments.delivery import (
    CircuitBreaker,
    backoff,
    retry_after_seconds,
    send_webhook,
)
from seamline.moments.destinations import DestinationPolicy, DestinationRefused
from seamline.moments.dryrun import simulate
from seamline.moments.predicates import parse_where, walk
from seamline.moments.rules import QuietHours, RuleError, parse_rule
from tests.webhook_receiver import Receiver

SECRET = signing.new_secret()

# -- rules ---------------------------------------------------------------------------------


def rule(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "declined-help",
        "trigger": {"event": "Card Declined"},
        "unless": {"event": "Payment Succeeded", "within": "10m"},
        "actions": [{"webhook": {"url": "https://hooks.example.com/x", "secret": SECRET}}],
    }
    spec.update(extra)
    return spec


def test_the_minimal_rule_of_the_design_parses_from_yaml_and_json() -> None:
    text = f"""
name: declined-help
trigger: {{event: Card Declined}}
unless: {{event: Payment Succeeded, within: 10m}}
actions:
  - webhook: {{url: "https://hooks.example.com/declined", secret: "{SECRET}"}}
"""
    parsed = parse_rule(text)
    assert parsed.name == "declined-help"
    assert parsed.window == timedelta(minutes=10)
    assert parsed.reentry.mode == "always" and not parsed.transactional
    assert parse_rule(__import__("json").dumps(rule())).unless == parsed.unless


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trigger": {"evnt": "X"}}, "trigger.evnt"),
        (
            {"trigger": {"event": "X", "where": {"properties.amount": {"gtee": 3}}}},
            "trigger.where.properties.amount",
        ),
        ({"unless": {"event": "Paid", "within": "10 minutes"}}, "unless.within"),
        ({"unless": {"event": "Paid"}}, "unless.within"),
        ({"actions": []}, "actions"),
        ({"actions": [{"webhook": {"url": "https://a.example"}}]}, "actions[0].webhook.secret"),
        (
            {"actions": [{"webhook": {"url": "https://a.example", "secret": "hunter2"}}]},
            "actions[0].webhook.secret",
        ),
        (
            {
                "actions": [
                    {
                        "webhook": {
                            "url": "https://a.example",
                            "secret": SECRET,
                            "body": "{{ event.properties",
                        }
                    }
                ]
            },
            "actions[0].webhook.body",
        ),
        ({"cap": {"per": "1d", "max": 0}}, "cap.max"),
        ({"quiet_hours": {"start": "9pm", "end": "08:00"}}, "quiet_hours.start"),
        (
            {"quiet_hours": {"start": "21:00", "end": "08:00", "policy": "hld"}},
            "quiet_hours.policy",
        ),
        ({"reentry": "twice"}, "reentry"),
        ({"expires": "-1h"}, "expires"),
        ({"colour": "red"}, "rule.colour"),
        ({"name": "bad/name"}, "name"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(change: dict[str, Any], field: str) -> None:
    spec = rule()
    spec.update(change)
    with pytest.raises(RuleError) as caught:
        parse_rule(spec)
    assert f"{field}:" in caught.value.message, caught.value.message


def test_did_you_mean_for_unknown_fields() -> None:
    with pytest.raises(RuleError, match="Did you mean 'unless'"):
        parse_rule({**rule(), "unles": {"event": "X", "within": "1m"}})


def test_filters_both_spellings() -> None:
    event = {
        "event": "Card Declined",
        "channel": "mobile",
        "properties": {"amount": "25.5", "plan": "pro", "tags": ["vip"]},
    }
    simple = parse_where(
        {"properties.amount": {"gte": 20, "lt": 100}, "channel": ["mobile", "web"]}
    )
    tree = parse_where(
        {
            "all": [
                {"path": "properties.plan", "op": "in", "value": ["pro", "team"]},
                {"not": {"path": "properties.tags", "op": "contains", "value": "blocked"}},
                {
                    "any": [
                        {"path": "properties.missing", "op": "exists"},
                        {"path": "properties.plan", "op": "regex", "value": "^p"},
                    ]
                },
            ]
        }
    )
    lookup = lambda path: walk(event, path)  # noqa: E731
    assert simple.evaluate(lookup) and tree.evaluate(lookup)
    assert not parse_where({"properties.amount": {"gt": 30}}).evaluate(lookup)
    assert parse_where({"properties.nope": {"neq": 1}}).evaluate(lookup)  # absent is "not equal"
    assert not parse_where({"properties.nope": 1}).evaluate(lookup)


# -- signatures ----------------------------------------------------------------------------------


def test_signatures_verify_with_the_reference_library_including_rotation() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"moment":"declined-help"}'
    stamp = int(datetime.now(UTC).timestamp())
    headers = signing.headers([old, new], "msg_1", stamp, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver that holds either secret accepts the message
        Webhook(secret).verify(body, headers)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(body, headers)
    stale = signing.headers([old], "msg_1", stamp - 3600, body)  # replayed an hour later
    with pytest.raises(Exception, match="timestamp"):
        Webhook(old).verify(body, stale)


# -- SSRF ----------------------------------------------------------------------------------------
STUB_DNS = {
    "localhost.stub": ["127.0.0.1", "::1"],
    "internal.example": ["10.0.0.5"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "v6loop.example": ["::1"],
    "10.0.0.1.nip.io": ["10.0.0.1"],
    "ec2-metadata.example": ["169.254.169.254"],
    "hooks.example.com": ["93.184.216.34"],
    "mapped.example": ["::ffff:192.168.0.1"],
}


def stub_resolver(host: str, port: int) -> list[str]:
    if host in STUB_DNS:
        return STUB_DNS[host]
    raise socket.gaierror(socket.EAI_NONAME, "stub: unknown name")


HOSTILE = [
    "http://127.0.0.1/",
    "https://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://017700000001/",
    "https://0/",
    "https://0.0.0.0/",
    "https://[::]/",
    "https://10.0.0.1/",
    "https://10.255.255.255:8443/x",
    "https://172.16.0.1/",
    "https://172.31.255.254/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://169.254.1.1/",
    "https://[::1]/",
    "https://[fd00::1]/",
    "https://[fe80::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[fd00:ec2::254]/",
    "https://100.64.0.1/",
    "https://100.100.100.200/",
    "https://192.0.0.192/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://192.0.2.1/",
    "https://198.18.0.1/",
    "https://[64:ff9b::7f00:1]/",
    "https://[2002:7f00:1::]/",
    "https://[::127.0.0.1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://metadata/",
    "https://instance-data/",
    "https://METADATA.GOOGLE.INTERNAL./",
    "http://evil@127.0.0.1/",
    "https://user:pass@hooks.example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://hooks.example.com/",
    "dict://127.0.0.1:11211/",
    "javascript:alert(1)",
    "https://localhost.stub/",
    "https://internal.example/",
    "https://mixed.example/",
    "https://v6loop.example/",
    "https://10.0.0.1.nip.io/",
    "https://ec2-metadata.example/",
    "https://mapped.example/",
    "http://93.184.216.34/",
    "http://hooks.example.com/",
    "https://nxdomain.example/",
    "https://0x/",
    "https://1.2.3.4.5/",
    "https://127.0.0.1 /",
    "https://hooks.example.com\\@127.0.0.1/",
    "https://[fe80::1%25eth0]/",
    "https://[::1/",
    "https://hooks.example.com:99999/",
    "",
    "//127.0.0.1/",
]


def test_at_least_forty_hostile_destinations_are_refused_without_any_traffic() -> None:
    policy = DestinationPolicy((), stub_resolver)
    assert len(HOSTILE) >= 40
    accepted = []
    for url in HOSTILE:
        try:
            policy.check_url(url)
        except DestinationRefused as exc:
            assert "refused" in exc.message or "required" in exc.message
            continue
        accepted.append(url)
    assert accepted == [], f"these were not refused: {accepted}"


def test_localhost_resolving_to_loopback_is_refused_by_the_system_resolver() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        DestinationPolicy(()).check_url("https://localhost/hook")


def test_operator_ranges_admit_private_addresses_but_never_metadata() -> None:
    everything = DestinationPolicy.from_setting("0.0.0.0/0, ::/0", stub_resolver)
    for url in (
        "http://127.0.0.1:9000/x",
        "http://10.0.0.1/",
        "https://[fd00::1]/",
        "https://internal.example/",
    ):
        everything.check_url(url)
    for url in (
        "http://169.254.169.254/",
        "https://[fd00:ec2::254]/",
        "https://metadata/",
        "https://[::ffff:169.254.169.254]/",
        "https://ec2-metadata.example/",
        "http://100.100.100.200/",
    ):
        with pytest.raises(DestinationRefused, match="metadata"):
            everything.check_url(url)
    loopback_only = DestinationPolicy.from_setting("127.0.0.0/8", stub_resolver)
    loopback_only.check_url("http://127.0.0.1:8080/hook")
    with pytest.raises(DestinationRefused):
        loopback_only.check_url("http://10.0.0.1/")
    public = DestinationPolicy((), stub_resolver)
    assert public.check_url("https://hooks.example.com/x?a=1").target == "/x?a=1"
    with pytest.raises(BadRequest, match="allow_destinations"):
        DestinationPolicy.from_setting("10.0.0.0/33")


def test_send_time_check_defeats_dns_rebinding_and_never_connects() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public when saved, loopback at send
    policy = DestinationPolicy((), lambda host, port: next(answers))
    rule_ = parse_rule(
        rule(actions=[{"webhook": {"url": "https://rebind.example/h", "secret": SECRET}}])
    )
    policy.check_url(rule_.actions[0].url)  # the save-time check passes
    requests: list[httpx.Request] = []
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: requests.append(r) or httpx.Response(200))
    )
    outcome = send_webhook(client, policy, rule_.actions[0], _delivery())
    assert outcome.kind == "failed" and "loopback" in (outcome.error or "")
    assert requests == []


def _delivery() -> dict[str, Any]:
    return {"delivery_id": "msg_test", "payload": '{"a":1}', "content_type": "application/json"}


def test_the_sender_connects_to_the_checked_address_and_does_not_follow_redirects() -> None:
    receiver = Receiver(SECRET).start()
    receiver.answers["/redirect"] = (302, {"Location": "http://169.254.169.254/latest/"})
    try:
        policy = DestinationPolicy.from_setting("127.0.0.0/8", lambda host, port: ["127.0.0.1"])
        with httpx.Client(timeout=5, follow_redirects=False, trust_env=False) as client:
            ok = parse_rule(
                rule(
                    actions=[
                        {
                            "webhook": {
                                "url": f"http://hooks.test:{receiver.port}/ok",
                                "secret": SECRET,
                            }
                        }
                    ]
                )
            )
            outcome = send_webhook(client, policy, ok.actions[0], _delivery())
            assert outcome.kind == "delivered"
            got = receiver.for_path("/ok")[0]
            assert got.headers["host"] == f"hooks.test:{receiver.port}"  # pinned, Host kept
            assert got.verified and got.webhook_id == "msg_test"
            moved = parse_rule(
                rule(
                    actions=[
                        {
                            "webhook": {
                                "url": f"http://hooks.test:{receiver.port}/redirect",
                                "secret": SECRET,
                            }
                        }
                    ]
                )
            )
            outcome = send_webhook(client, policy, moved.actions[0], _delivery())
            assert outcome.kind == "failed" and "redirect" in (outcome.error or "")
        assert len(receiver.received) == 2  # nothing followed the Location
    finally:
        receiver.stop()


# -- timing ---------------------------------------------------------------------------------------


def test_quiet_hours_across_midnight_in_the_persons_zone() -> None:
    quiet = QuietHours(time(21, 0), time(8, 0))
    auckland = ZoneInfo("Pacific/Auckland")
    # 10:30 UTC on 1 July is 22:30 in Auckland (NZST, +12): quiet until 08:00 next morning
    until = quiet_until(datetime(2026, 7, 1, 10, 30), quiet, auckland)
    assert until == datetime(2026, 7, 1, 20, 0)
    assert quiet_until(datetime(2026, 7, 1, 1, 0), quiet, auckland) is None  # 13:00 there
    assert quiet_until(datetime(2026, 7, 1, 1, 0), quiet, ZoneInfo("UTC")) is not None


def test_backoff_grows_with_jitter_and_retry_after_is_read() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff(n, 5.0, rng) for n in range(1, 6)]
    assert 2.5 <= delays[0] <= 5 and delays == sorted(delays)
    assert backoff(40, 5.0, rng) <= 6 * 3600
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_circuit_breaker_opens_doubles_and_closes() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=10)
    for _ in range(3):
        assert breaker.wait("h", 0) == 0
        breaker.record("h", False, 0)
    assert breaker.wait("h", 1) == pytest.approx(9)
    assert breaker.wait("h", 11) == 0  # half-open: one trial
    assert breaker.wait("h", 11) > 0  # ...and only one
    breaker.record("h", False, 11)
    assert breaker.wait("h", 12) == pytest.approx(19)  # opened again for twice as long
    breaker.record("h", True, 40)
    assert breaker.wait("h", 40) == 0 and breaker.state("h") == "closed"


def test_dry_run_follows_unless_caps_and_reentry() -> None:
    spec = rule(cap={"per": "1d", "max": 1})
    t0 = datetime(2026, 11, 2, 12, 0)

    def ev(name: str, minutes: float, **props: Any) -> tuple[dict[str, Any], datetime]:
        ts = t0 + timedelta(minutes=minutes)
        return (
            {
                "event": name,
                "message_id": f"{name}-{minutes}",
                "source_id": "s",
                "properties": props,
                "timestamp": ts.isoformat(),
            },
            ts,
        )

    journey = [
        ev("Card Declined", 0),
        ev("Card Declined", 1),
        ev("Payment Succeeded", 5),
        ev("Card Declined", 60),
        ev("Card Declined", 120),
        ev("Card Declined", 24 * 60 + 200),
    ]
    result = simulate(
        parse_rule(spec), "p1", journey, timedelta(seconds=30), t0 + timedelta(days=3), "UTC", {}
    )
    outcomes = [m["outcome"] for m in result["moments"]]
    assert outcomes == ["cancelled", "fires", "capped", "fires"]
    assert result["absorbed_triggers"] == 1
    assert result["moments"][1]["at"] == "2026-11-02T13:10:30Z"  # window 10m + grace 30s
    once = simulate(
        parse_rule(rule(reentry="once")),
        "p1",
        journey,
        timedelta(0),
        t0 + timedelta(days=3),
        "UTC",
        {},
    )
    assert [m["outcome"] for m in once["moments"]] == ["cancelled", "fires", "skipped", "skipped"]


# -- in process: the Python API -------------------------------------------------------------


def test_python_api_hook_errors_never_cost_events_and_forget_clears_moments(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seamline

    monkeypatch.setenv("SEAMLINE_ALLOW_DESTINATIONS", "127.0.0.0/8")
    receiver = Receiver(SECRET).start()
    try:
        with seamline.open(tmp_path / "ws") as ws:
            ws.add_source("app", "mobile")
            ws.add_moment(
                rule(actions=[{"webhook": {"url": f"{receiver.url}/h", "secret": SECRET}}])
            )
            stamp = datetime.now(UTC).isoformat()
            ws.import_events(
                "app",
                [{"type": "track", "event": "Card Declined", "userId": "f1", "timestamp": stamp}],
            )
            assert ws.moment_stats()["moments"][0]["waiting"] == 1
            dry = ws.test_moment("declined-help", "f1")
            assert [m["outcome"] for m in dry["moments"]] == ["waiting"]

            def broken(*args: Any) -> None:
                raise ValueError("a bug in a rule evaluation")

            monkeypatch.setattr(ws.moments.hook, "_evaluate", broken)
            stored = ws.import_events(
                "app",
                [{"type": "track", "event": "Card Declined", "userId": "f2", "timestamp": stamp}],
            )
            assert stored["stored"] == 1 and ws.moments.hook.errors == 1
            monkeypatch.undo()
            forgotten = ws.forget("f1")
            assert forgotten["deleted"]["moments"] == 1
            assert ws.moment_stats()["moments"][0]["triggered"] == 0
            with pytest.raises(
                SeamlineError, match=r"No moment named 'declined-hlp'\. Did you mean"
            ):
                ws.disable_moment("declined-hlp")
    finally:
        receiver.stop()
