"""The fingerprints of events' dedupe keys, computed where the events are parsed.

An event's dedupe key is ``md5_number(source_id || chr(0) || message_id)`` (DuckDB, the
events table's primary key). The writer's index of stored keys
(:mod:`seamline.store.keyindex`) holds its low 64 bits, which are the first 8 bytes of the
MD5 digest read little-endian. A parse worker that knows the source computes them for
its body, off the writer's thread.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def key_digests(source_id: str, message_ids: Iterable[str]) -> bytes:
    """The first 8 bytes of each event's key digest, concatenated (8 bytes an event)."""
    prefix = hashlib.md5(f"{source_id}\x00".encode(), usedforsecurity=False)
    parts: list[bytes] = []
    part = parts.append
    for message in message_ids:
        running = prefix.copy()
        running.update(message.encode())
        part(running.digest()[:8])
    return b"".join(parts)
