"""Time-ordered ids, ``<prefix>_<48-bit ms clock><80 random bits>`` in hex (ULID-like).

A delivery's id is its Standard Webhooks ``webhook-id``: the receiver's idempotency key,
the same on every retry and replay.
"""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"
