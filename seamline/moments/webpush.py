"""Web push (RFC 8030/8291/8292) through the same outbox: ``pywebpush`` encrypts, we send.

An action ``webpush: {subscription: {endpoint, keys: {p256dh, auth}}}`` (or
``subscription_trait: NAME``: the person's identify trait holding the subscription the
browser gave you) becomes one outbox row whose payload is an envelope
``{"subscription", "data", "ttl", "urgency"}``. At each attempt:

1. the endpoint URL goes through the SSRF guard like a webhook's (push services are public
   HTTPS hosts; a test receiver on 127.0.0.1 is reached only through ``allow_destinations``);
2. ``pywebpush.WebPusher`` encrypts the data for the subscription (``aes128gcm``) and
   ``py_vapid`` signs the VAPID claims with ``moments_vapid_private_key`` (``sub`` is
   ``moments_vapid_subject``);
3. we POST it ourselves to the checked address (pinned, no redirects), so the outbox's
   retries, backoff, ``Retry-After``, circuit breaker and dead letters all apply. 404 and
   410 mean the subscription is gone: failed at once. The ``Topic`` header is derived from
   the delivery id, so a retry replaces an undelivered earlier attempt at the push service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from seamline.moments.destinations import DestinationPolicy, DestinationRefused

URGENCIES = ("very-low", "low", "normal", "high")
USER_AGENT = "Seamline-Moments/1"


class WebPushProblem(ValueError):
    """A subscription that cannot be used (named in the message)."""


def check_subscription(value: Any, where: str) -> dict[str, Any]:
    """``{endpoint, keys: {p256dh, auth}}`` as a browser's ``PushSubscription.toJSON()``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise WebPushProblem(f"{where}: not a JSON push subscription") from None
    if not isinstance(value, dict) or not isinstance(value.get("endpoint"), str):
        raise WebPushProblem(
            f"{where}: a push subscription {{endpoint, keys: {{p256dh, auth}}}} as the "
            "browser's PushSubscription.toJSON() gives it"
        )
    keys = value.get("keys")
    if not isinstance(keys, dict) or not all(isinstance(keys.get(k), str) and keys[k]
                                             for k in ("p256dh", "auth")):  # fmt: skip
        raise WebPushProblem(f"{where}.keys: needs p256dh and auth (base64url strings)")
    for name in ("p256dh", "auth"):
        try:
            raw = base64.urlsafe_b64decode(keys[name] + "=" * (-len(keys[name]) % 4))
        except ValueError:
            raise WebPushProblem(f"{where}.keys.{name}: not base64url") from None
        if (name == "p256dh" and len(raw) != 65) or (name == "auth" and len(raw) != 16):
            raise WebPushProblem(f"{where}.keys.{name}: wrong length for a push subscription")
    return {"endpoint": value["endpoint"], "keys": {"p256dh": keys["p256dh"],
                                                    "auth": keys["auth"]}}  # fmt: skip


def envelope(subscription: dict[str, Any], data: str, ttl: int, urgency: str | None) -> str:
    return json.dumps({"subscription": subscription, "data": data, "ttl": ttl,
                       "urgency": urgency}, separators=(",", ":"))  # fmt: skip


def vapid_signer(private_key: str) -> Any:
    """A ``py_vapid`` signer from a PEM or base64url (raw or DER) private key."""
    from py_vapid import Vapid02

    key = private_key.strip()
    if "BEGIN" in key:
        return Vapid02.from_pem(key.encode())
    return Vapid02.from_string(key)


def topic(delivery_id: str) -> str:
    """At most 32 URL-safe characters (RFC 8030 5.4), the same for every retry."""
    digest = hashlib.sha256(delivery_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


def send_webpush(client: httpx.Client, policy: DestinationPolicy, delivery: dict[str, Any],
                 vapid_key: str, vapid_subject: str) -> tuple[str, int | None, str | None,
                                                              float | None]:  # fmt: skip
    """One attempt; returns (kind, status, error, retry_after) like the webhook sender."""
    from pywebpush import WebPusher

    from seamline.moments.delivery import classify  # the delivery module imports this one

    try:
        message = json.loads(delivery["payload"])
        subscription = check_subscription(message["subscription"], "subscription")
    except (ValueError, KeyError, TypeError) as exc:
        return "failed", None, str(exc)[:300], None
    try:
        checked = policy.check_url(subscription["endpoint"], "subscription.endpoint")
    except DestinationRefused as exc:
        return "failed", None, exc.message[:300], None
    if not vapid_key or not vapid_subject:
        return "failed", None, "web push needs moments_vapid_private_key and _subject", None
    data = str(message.get("data") or "").encode()
    try:
        encoded = WebPusher(subscription).encode(data, "aes128gcm")
        parts = urlsplit(subscription["endpoint"])
        claims = {"sub": vapid_subject, "aud": f"{parts.scheme}://{parts.netloc}",
                  "exp": int(time.time()) + 12 * 3600}  # fmt: skip
        signed = vapid_signer(vapid_key).sign(claims)
    except Exception as exc:  # noqa: BLE001 - a bad key or subscription: no retry can fix it
        return "failed", None, f"web push encryption failed: {type(exc).__name__}", None
    headers = {
        "content-encoding": "aes128gcm",
        "content-type": "application/octet-stream",
        "ttl": str(int(message.get("ttl") or 0)),
        "topic": topic(delivery["delivery_id"]),
        "authorization": signed["Authorization"],
        "user-agent": USER_AGENT,
        "host": checked.host_header,
    }
    if message.get("urgency"):
        headers["urgency"] = str(message["urgency"])
    literal = checked.host == str(checked.addresses[0]) and len(checked.addresses) == 1
    extensions = {"sni_hostname": checked.host} if checked.scheme == "https" and not literal else {}
    error = "connection failed"
    for address in checked.addresses:
        try:
            response = client.post(checked.pinned_url(address), content=encoded["body"],
                                   headers=headers, extensions=extensions)  # fmt: skip
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            error = type(exc).__name__
            continue
        except httpx.HTTPError as exc:
            return "retry", None, type(exc).__name__, None
        outcome = classify(response)
        return outcome.kind, outcome.status, outcome.error, outcome.retry_after
    return "retry", None, error, None
