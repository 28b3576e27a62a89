"""Standard Webhooks signatures (https://www.standardwebhooks.com, v1 symmetric).

The signed content is ``"{webhook-id}.{webhook-timestamp}.{raw body}"``, the MAC is
HMAC-SHA256 with the secret's bytes (the base64 after ``whsec_``), and the header is a
space-separated list of ``v1,<base64>``: one entry per secret, so a rule can list the
old and the new secret while receivers rotate.

>>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
>>> sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
MIN_BYTES = 16  # the spec recommends 24-64 random bytes; refuse anything shorter than 16


class SecretError(ValueError):
    pass


def secret_bytes(secret: str) -> bytes:
    """The key inside ``whsec_<base64>``; :class:`SecretError` says what is wrong."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX):
        raise SecretError(f"a webhook secret looks like '{PREFIX}<base64>' (see `new_secret`)")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"the part after '{PREFIX}' is not valid base64") from None
    if len(key) < MIN_BYTES:
        raise SecretError(f"the secret is {len(key)} bytes; use at least 24 random bytes")
    return key


def new_secret() -> str:
    """A fresh secret: 32 random bytes, as receivers expect them."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature."""
    content = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signature_header(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for every secret of a destination."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_)


def headers(secrets_: list[str], message_id: str, timestamp: int, body: bytes
            ) -> dict[str, str]:  # fmt: skip
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, message_id, timestamp, body),
    }
