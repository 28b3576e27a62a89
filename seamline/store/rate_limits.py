"""Durable per-source counts of requests refused by the ingest rate limit.

They live in the ``counters`` table as ``rate_limited:<source_id>`` rows, created on
a source's first refusal (no migration needed: ``counters`` is keyed by name).
"""

from __future__ import annotations

from typing import Any

from seamline.store.database import Store

PREFIX = "rate_limited:"
_ADD = (
    "INSERT INTO counters VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value"
)


def add_refusals(con: Any, counts: dict[str, int]) -> None:
    """Add refusals by source id; runs in the writer's transaction."""
    for source_id, count in counts.items():
        if count:
            con.execute(_ADD, [PREFIX + source_id, count])


def refusals(store: Store) -> dict[str, int]:
    """Requests refused so far, by source id (only what has been written)."""
    rows = store.query(
        "SELECT name, value FROM counters WHERE starts_with(name, ?)", [PREFIX]
    )
    return {str(name)[len(PREFIX):]: int(value) for name, value in rows}
