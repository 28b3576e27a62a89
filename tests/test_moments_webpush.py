"""Web push through the outbox, and the SSRF guard on every Apprise service.

Web push: a real workspace (``seamline.open``, its scheduler and delivery worker running)
sends to a push receiver on 127.0.0.1; the test plays the browser: it made the
subscription's keys, decrypts the message with the independent ``http_ece`` package and
verifies the VAPID signature with ``cryptography``. The receiver is reachable only because
the operator's ``allow_destinations`` admits 127.0.0.0/8: without it the rule is refused.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import http_ece
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid02

import seamline
from seamline.errors import BadRequest
from seamline.moments.delivery import send_apprise
from seamline.moments.destinations import DestinationPolicy
from seamline.moments.rules import parse_rule
from tests.test_moments import wait_until
from tests.webhook_receiver import Receiver


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Browser:
    """A push subscription as a browser makes one: its own ECDH key and auth secret."""

    def __init__(self, endpoint: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.subscription = {"endpoint": endpoint, "keys": {"p256dh": b64(public),
                                                            "auth": b64(self.auth)}}  # fmt: skip

    def decrypt(self, body: bytes) -> Any:
        return json.loads(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth,
                                           version="aes128gcm"))  # fmt: skip


def verify_vapid(header: str, public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """``vapid t=<JWT>,k=<key>``: check the ES256 signature; return the claims."""
    scheme, _, params = header.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in params.split(","))
    signed, _, signature = fields["t"].rpartition(".")
    raw = unb64(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, signed.encode(), ec.ECDSA(hashes.SHA256()))  # raises if not its key
    sent_key = unb64(fields["k"])
    assert sent_key == public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    claims: dict[str, Any] = json.loads(unb64(signed.split(".")[1]))
    return claims


def test_web_push_is_encrypted_signed_and_delivered_through_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vapid = Vapid02()
    vapid.generate_keys()
    monkeypatch.setenv("SEAMLINE_MOMENTS_VAPID_PRIVATE_KEY", vapid.private_pem().decode())
    monkeypatch.setenv("SEAMLINE_MOMENTS_VAPID_SUBJECT", "mailto:ops@example.com")
    monkeypatch.setenv("SEAMLINE_MOMENTS_POLL_MS", "50")
    push = Receiver().start()
    push.answers["/push/gone"] = (410, {})
    fixed, saved = Browser(f"{push.url}/push/fixed"), Browser(f"{push.url}/push/trait")
    gone = Browser(f"{push.url}/push/gone")
    rule = {
        "name": "gate-push",
        "trigger": {"event": "Gate Changed"},
        "actions": [{"webpush": {"subscription": fixed.subscription, "urgency": "high",
                                 "ttl": "10m",
                                 "body": '{"title": "Gate {{ event.properties.gate }}"}'}}],
    }  # fmt: skip
    try:
        # without the operator's allow range, a push endpoint on loopback is refused
        with seamline.open(tmp_path / "ws") as ws, pytest.raises(BadRequest) as refused:
            ws.add_moment(rule)
        assert "loopback" in str(refused.value) and "subscription.endpoint" in str(refused.value)
        monkeypatch.setenv("SEAMLINE_ALLOW_DESTINATIONS", "127.0.0.0/8")
        with seamline.open(tmp_path / "ws") as ws:
            ws.add_source("app", "mobile")
            ws.add_moment(rule)
            ws.add_moment({
                "name": "saved-push",
                "trigger": {"event": "Offer Ready"},
                "actions": [{"webpush": {"subscription_trait": "web_push"}}],
            })  # fmt: skip
            stamp = datetime.now(UTC).isoformat()
            ws.import_events("app", [
                {"type": "identify", "userId": "w1", "timestamp": stamp,
                 "traits": {"web_push": saved.subscription}},
                {"type": "identify", "userId": "w3", "timestamp": stamp,
                 "traits": {"web_push": gone.subscription}},
                {"type": "track", "event": "Gate Changed", "userId": "w1", "timestamp": stamp,
                 "properties": {"gate": "B7"}},
                {"type": "track", "event": "Offer Ready", "userId": "w1", "timestamp": stamp},
                {"type": "track", "event": "Offer Ready", "userId": "w2", "timestamp": stamp},
                {"type": "track", "event": "Offer Ready", "userId": "w3", "timestamp": stamp},
            ])  # fmt: skip
            got = push.wait_for("/push/fixed", 1)
            assert len(got) == 1
            message = got[0]
            assert fixed.decrypt(message.body) == {"title": "Gate B7"}
            assert message.headers["content-encoding"] == "aes128gcm"
            assert message.headers["ttl"] == "600" and message.headers["urgency"] == "high"
            claims = verify_vapid(message.headers["authorization"], vapid.public_key)
            assert claims["aud"] == push.url and claims["sub"] == "mailto:ops@example.com"
            other = Vapid02()
            other.generate_keys()
            with pytest.raises(InvalidSignature):  # the check is real: another key fails
                verify_vapid(message.headers["authorization"], other.public_key)
            with pytest.raises(Exception):  # noqa: B017 - only the subscriber can decrypt
                Browser("x").decrypt(message.body)
            from_trait = push.wait_for("/push/trait", 1)
            payload = saved.decrypt(from_trait[0].body)
            assert payload["moment"] == "saved-push" and payload["type"] == "moment.fired"
            assert payload["trigger"]["event"] == "Offer Ready"
            assert len(push.wait_for("/push/gone", 1)) == 1
            errors = wait_until(lambda: sorted(
                ((d["last_status"], d["last_error"]) for d in ws.deliveries(failed=True)),
                key=str) if len(ws.deliveries(failed=True)) == 2 else None)  # fmt: skip
            assert errors == [
                (410, "HTTP 410"),  # the subscription is gone: failed at once, no retry
                (None, "the person has no web push subscription in trait 'web_push'"),
            ]
            assert len(push.for_path("/push/gone")) == 1
            listed = ws.list_moments()
            assert fixed.subscription["keys"]["auth"] not in json.dumps(listed)
    finally:
        push.stop()


def test_web_push_rules_are_checked_when_saved() -> None:
    with pytest.raises(BadRequest, match=r"actions\[0\]\.webpush\.subscription\.keys"):
        parse_rule({"name": "p", "trigger": "X", "actions": [
            {"webpush": {"subscription": {"endpoint": "https://push.example/x", "keys": {}}}}]})
    with pytest.raises(BadRequest, match=r"actions\[0\]\.webpush\.urgency.*Did you mean 'high'"):
        parse_rule({"name": "p", "trigger": "X", "actions": [
            {"webpush": {"subscription_trait": "web_push", "urgency": "hihg"}}]})


# -- Apprise: every service that connects to a named host is guarded -----------------------
def resolver(answers: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("gotify://10.0.0.5/AbCdEfGhIjKlMn", "10.0.0.5 is a private address"),
        ("ntfys://169.254.169.254/topic", "cloud metadata"),
        ("mailto://user:pass@example.com?smtp=10.1.2.3", "Email host '10.1.2.3'"),
        ("mmosts://intranet.corp/abcdefghijklmnopqrstuvwxyz", "intranet.corp"),
        ("matrixs://user:pass@[::1]/#room", "loopback"),
        ("jsons://127.0.0.1/hook", "loopback"),
        ("apprises://192.168.1.10/token", "private address"),
        ("not-a-service://x", "Apprise does not understand"),
    ],
)
def test_apprise_hosts_are_refused_when_saved(url: str, reason: str, tmp_path: Path) -> None:
    with seamline.open(tmp_path / "ws") as ws:
        ws.moments.policy = DestinationPolicy((), resolver({"intranet.corp": ["10.20.0.4"]}))
        with pytest.raises(BadRequest, match=r"actions\[0\]\.apprise\.url") as refused:
            ws.add_moment({"name": "a", "trigger": "X", "actions": [{"apprise": {"url": url}}]})
        assert reason in str(refused.value)
        assert ws.list_moments() == []


def test_fixed_provider_services_pass_and_a_rebound_host_is_refused_at_send(
    tmp_path: Path,
) -> None:
    public = resolver({"push.example.net": ["93.184.215.14"], "smtp.gmail.com": ["142.250.1.108"]})
    with seamline.open(tmp_path / "ws") as ws:
        ws.moments.policy = DestinationPolicy((), public)
        for url in ("twilio://ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:tokentokentokentokentokent"
                    "oken12@+15551230000/+15559870000", "tgram://123456789:abcdefg_hijklmnop/1",
                    "mailto://user:pass@gmail.com", "ntfy://my-topic",
                    "gotifys://push.example.net/AbCdEfGhIjKlMn"):  # fmt: skip
            ws.add_moment({"name": "ok", "trigger": "X", "actions": [{"apprise": {"url": url}}]})
    # at send time the name now answers a private address (DNS rebinding): no attempt
    rebound = DestinationPolicy((), resolver({"push.example.net": ["10.0.0.7"]}))
    action = parse_rule({"name": "ok", "trigger": "X", "actions": [
        {"apprise": {"url": "gotifys://push.example.net/AbCdEfGhIjKlMn"}}]}).actions[0]
    outcome = send_apprise(rebound, action, {"delivery_id": "msg_1", "payload": "hi",
                                              "title": "t"})  # fmt: skip
    assert outcome.kind == "failed" and "10.0.0.7 is a private address" in str(outcome.error)
