"""Moment tables: rules, trigger instances (durable timers) and the delivery outbox.

Everything a moment needs to survive ``kill -9`` lives here: a trigger instance row is
the timer (``fire_at``), a delivery row is the outbox entry. ``UNIQUE (instance_id,
action_index)`` makes the decision to send happen at most once per action, and
``UNIQUE (rule_id, trigger_source_id, trigger_message_id)`` makes replays of a trigger
event idempotent. Writes run on the writer's connection (inside its transactions);
reads on a cursor of their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

#: The connection type the moments package passes around without importing duckdb.
Connection = duckdb.DuckDBPyConnection
#: Errors of the engine: they abort the transaction, so they cannot be swallowed.
StoreError = duckdb.Error

MIGRATION = """
CREATE TABLE moment_rules (
    rule_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    enabled BOOLEAN NOT NULL,
    definition JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE moment_rule_versions (
    rule_id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    definition JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (rule_id, version)
);
CREATE TABLE moment_instances (
    instance_id VARCHAR PRIMARY KEY,
    rule_id VARCHAR NOT NULL,
    rule_version INTEGER NOT NULL,
    person_id VARCHAR NOT NULL,
    trigger_source_id VARCHAR NOT NULL,
    trigger_message_id VARCHAR NOT NULL,
    trigger_ts TIMESTAMP NOT NULL,
    deadline_ts TIMESTAMP NOT NULL,
    due_at TIMESTAMP NOT NULL,
    fire_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL,
    reason VARCHAR,
    trigger JSON NOT NULL,
    created_at TIMESTAMP NOT NULL,
    decided_at TIMESTAMP,
    late_cancels INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rule_id, trigger_source_id, trigger_message_id)
);
CREATE TABLE moment_deliveries (
    delivery_id VARCHAR PRIMARY KEY,
    instance_id VARCHAR NOT NULL,
    action_index INTEGER NOT NULL,
    rule_id VARCHAR NOT NULL,
    rule_version INTEGER NOT NULL,
    person_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    target VARCHAR NOT NULL,
    title VARCHAR,
    payload VARCHAR NOT NULL,
    content_type VARCHAR,
    status VARCHAR NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    last_status INTEGER,
    last_error VARCHAR,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    replays INTEGER NOT NULL DEFAULT 0,
    UNIQUE (instance_id, action_index)
);
CREATE TABLE moment_counters (
    rule_id VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (rule_id, name)
);
"""

#: Instance statuses. ``waiting``/``held`` are open timers; the rest are final.
OPEN = ("waiting", "held")
_TS = pa.timestamp("us")
_S = pa.string()


def _unregister(con: Connection, name: str) -> None:
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)


def _stage(con: Connection, name: str, table: pa.Table, sql: str,
           params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:  # fmt: skip
    con.register(name, table)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        _unregister(con, name)


# -- rules -----------------------------------------------------------------------------
def load_rules(con: Connection) -> list[tuple[Any, ...]]:
    """(rule_id, name, version, enabled, definition JSON, created_at, updated_at) per rule."""
    rows = con.execute(
        "SELECT rule_id, name, version, enabled, definition, created_at, updated_at "
        "FROM moment_rules ORDER BY name"
    ).fetchall()
    return [tuple(row) for row in rows]


def rule_version(con: Connection, rule_id: str, version: int) -> str | None:
    row = con.execute(
        "SELECT definition FROM moment_rule_versions WHERE rule_id = ? AND version = ?",
        [rule_id, version],
    ).fetchone()
    return str(row[0]) if row else None


def save_rule(con: Connection, rule_id: str, name: str, definition: str, enabled: bool,
              now: datetime) -> tuple[str, int, bool]:  # fmt: skip
    """Insert or replace the rule called ``name``; returns (rule_id, version, created)."""
    row = con.execute("SELECT rule_id, version FROM moment_rules WHERE name = ?", [name]).fetchone()
    if row is None:
        con.execute(
            "INSERT INTO moment_rules VALUES (?, ?, 1, ?, ?, ?, ?)",
            [rule_id, name, enabled, definition, now, now],
        )
        version, created = 1, True
    else:
        rule_id, version, created = str(row[0]), int(row[1]) + 1, False
        con.execute(
            "UPDATE moment_rules SET version = ?, enabled = ?, definition = ?, updated_at = ? "
            "WHERE rule_id = ?",
            [version, enabled, definition, now, rule_id],
        )
    con.execute(
        "INSERT INTO moment_rule_versions VALUES (?, ?, ?, ?)", [rule_id, version, definition, now]
    )
    return rule_id, version, created


def set_enabled(con: Connection, name: str, enabled: bool, now: datetime) -> bool:
    row = con.execute(
        "UPDATE moment_rules SET enabled = ?, updated_at = ? WHERE name = ? RETURNING rule_id",
        [enabled, now, name],
    ).fetchone()
    return row is not None


#: Event columns after ``context`` in person_events/journey rows (the runtime's snapshot has
#: them too: ``seamline.moments.runtime.EXTRA_FIELDS``).
_EXTRA = ("user_id, anonymous_id, os_name, os_version, app_name, app_version, device_type, "
          "device_model, locale, timezone, received_at")  # fmt: skip


# -- persons ---------------------------------------------------------------------------
def canonical_persons(con: Connection, persons: Iterable[str]) -> dict[str, str]:
    """Each person id -> its surviving person (itself unless merged away)."""
    ids = sorted(set(persons))
    found = dict(
        con.execute(
            "SELECT old_person_id, new_person_id FROM person_overrides "
            "WHERE old_person_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
    )
    return {person: str(found.get(person, person)) for person in ids}


def person_aliases(con: Connection, persons: Iterable[str]) -> dict[str, str]:
    """Every person id stored on events of these (canonical) persons -> the canonical id."""
    ids = sorted(set(persons))
    aliases = {person: person for person in ids}
    for old, new in con.execute(
        "SELECT old_person_id, new_person_id FROM person_overrides "
        "WHERE new_person_id IN (SELECT unnest(?::VARCHAR[]))",
        [ids],
    ).fetchall():
        aliases[str(old)] = str(new)
    return aliases


def person_events(con: Connection, persons: Sequence[str], names: Sequence[str],
                  since: datetime) -> list[tuple[Any, ...]]:  # fmt: skip
    """Stored events named ``names`` of these canonical persons from ``since`` on.

    Rows: (canonical person, source_id, message_id, event, type, timestamp, channel, unit,
    properties, traits, context, then the ``_EXTRA`` columns).
    """
    aliases = person_aliases(con, persons)
    rows = con.execute(
        "SELECT person_id, source_id, message_id, event, type, timestamp, channel, unit, "
        f"properties, traits, context, {_EXTRA} FROM events "
        "WHERE timestamp >= ? AND event IN (SELECT unnest(?::VARCHAR[])) "
        "AND person_id IN (SELECT unnest(?::VARCHAR[]))",
        [since, list(names), list(aliases)],
    ).fetchall()
    return [(aliases[str(r[0])], *r[1:]) for r in rows]


def person_context(con: Connection, persons: Sequence[str]
                   ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:  # fmt: skip
    """(latest context.timezone, identify traits merged oldest-first) per canonical person."""
    import json

    aliases = person_aliases(con, persons)
    ids = list(aliases)
    zones: dict[str, str] = {}
    for person, zone, _latest in con.execute(
        "SELECT person_id, arg_max(timezone, timestamp), max(timestamp) FROM events "
        "WHERE timezone IS NOT NULL AND person_id IN (SELECT unnest(?::VARCHAR[])) "
        "GROUP BY person_id ORDER BY 3",
        [ids],
    ).fetchall():
        zones[aliases[str(person)]] = str(zone)  # ordered by time: the latest alias wins
    traits: dict[str, dict[str, Any]] = {}
    for person, text in con.execute(
        "SELECT person_id, traits FROM events WHERE type = 'identify' AND traits IS NOT NULL "
        "AND person_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY timestamp LIMIT 10000",
        [ids],
    ).fetchall():
        with contextlib.suppress(ValueError, TypeError):
            value = json.loads(text)
            if isinstance(value, dict):
                traits.setdefault(aliases[str(person)], {}).update(value)
    return zones, traits


def journey(con: Connection, person: str, limit: int = 5000) -> list[tuple[Any, ...]]:
    """A canonical person's events in time order, shaped like :func:`person_events`."""
    aliases = person_aliases(con, [person])
    rows = con.execute(
        "SELECT person_id, source_id, message_id, event, type, timestamp, channel, unit, "
        f"properties, traits, context, {_EXTRA} FROM events "
        "WHERE person_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY timestamp, received_at, message_id LIMIT ?",
        [list(aliases), limit],
    ).fetchall()
    return [(aliases[str(r[0])], *r[1:]) for r in rows]


def source_names(con: Connection) -> dict[str, str]:
    return {
        str(k): str(v) for k, v in con.execute("SELECT source_id, name FROM sources").fetchall()
    }


# -- instances -------------------------------------------------------------------------
_INSTANCE_COLUMNS = (
    ("instance_id", _S), ("rule_id", _S), ("rule_version", pa.int32()), ("person_id", _S),
    ("trigger_source_id", _S), ("trigger_message_id", _S), ("trigger_ts", _TS),
    ("deadline_ts", _TS), ("due_at", _TS), ("fire_at", _TS), ("status", _S), ("reason", _S),
    ("trigger", _S), ("created_at", _TS),
)  # fmt: skip


def insert_instances(con: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert instance rows (in ``_INSTANCE_COLUMNS`` order); replays are ignored."""
    if not rows:
        return 0
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {name: pa.array(values, type=kind)
         for (name, kind), values in zip(_INSTANCE_COLUMNS, columns, strict=True)}
    )  # fmt: skip
    names = ", ".join(name for name, _ in _INSTANCE_COLUMNS)
    inserted = _stage(
        con, "_moment_instances", table,
        f"INSERT INTO moment_instances ({names}) SELECT {names} FROM _moment_instances "
        "ON CONFLICT DO NOTHING RETURNING instance_id",
    )  # fmt: skip
    return len(inserted)


def open_instances(con: Connection, rule_ids: Sequence[str], persons: Sequence[str],
                   fired_since: datetime | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    """Open instances (and, with ``fired_since``, recently fired ones) of these rules/persons.

    Rows: (instance_id, rule_id, canonical person, trigger_ts, deadline_ts, status, trigger).
    """
    aliases = person_aliases(con, persons)  # filter on stored ids: no join per row
    rows = con.execute(
        "SELECT instance_id, rule_id, person_id, trigger_ts, deadline_ts, status, trigger "
        "FROM moment_instances WHERE person_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND rule_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND (status IN ('waiting', 'held') OR (status = 'fired' AND deadline_ts >= ?))",
        [list(aliases), list(rule_ids), fired_since or datetime.max],
    ).fetchall()
    return [(r[0], r[1], aliases[str(r[2])], *r[3:]) for r in rows]


def last_fired(con: Connection, rule_ids: Sequence[str], persons: Sequence[str]
               ) -> dict[tuple[str, str], datetime]:  # fmt: skip
    """(rule_id, canonical person) -> when a moment last fired for them."""
    aliases = person_aliases(con, persons)
    rows = con.execute(
        "SELECT rule_id, person_id, max(decided_at) FROM moment_instances "
        "WHERE status = 'fired' AND person_id IN (SELECT unnest(?::VARCHAR[])) "
        "AND rule_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL",
        [list(aliases), list(rule_ids)],
    ).fetchall()
    out: dict[tuple[str, str], datetime] = {}
    for rule_id, person, at in rows:
        key = (str(rule_id), aliases[str(person)])
        out[key] = max(at, out.get(key, at))
    return out


def fired_since(con: Connection, persons: Sequence[str], since: datetime
                ) -> list[tuple[str, str, datetime]]:  # fmt: skip
    """(canonical person, rule_id, decided_at) of moments fired for these persons lately."""
    aliases = person_aliases(con, persons)
    rows = con.execute(
        "SELECT person_id, rule_id, decided_at FROM moment_instances "
        "WHERE status = 'fired' AND decided_at >= ? "
        "AND person_id IN (SELECT unnest(?::VARCHAR[]))",
        [since, list(aliases)],
    ).fetchall()
    return [(aliases[str(r[0])], str(r[1]), r[2]) for r in rows]


def set_status(con: Connection, updates: list[tuple[str, str, str | None]]) -> None:
    """Final statuses: (instance_id, status, reason)."""
    if not updates:
        return
    ids, statuses, reasons = (list(column) for column in zip(*updates, strict=True))
    table = pa.table({"instance_id": pa.array(ids, _S), "status": pa.array(statuses, _S),
                      "reason": pa.array(reasons, _S)})  # fmt: skip
    _stage(
        con, "_moment_status", table,
        "UPDATE moment_instances SET status = u.status, reason = u.reason "
        "FROM _moment_status u WHERE moment_instances.instance_id = u.instance_id",
    )  # fmt: skip


def count_late_cancels(con: Connection, instance_ids: list[str]) -> None:
    for instance_id in instance_ids:
        con.execute(
            "UPDATE moment_instances SET late_cancels = late_cancels + 1 WHERE instance_id = ?",
            [instance_id],
        )


def due_instances(con: Connection, now: datetime, limit: int,
                  only: Sequence[str] | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
    """Open instances whose timer has run out, oldest first (``only``: of these ids).

    Rows: (instance_id, rule_id, canonical person, trigger_ts, deadline_ts, due_at, status,
    trigger).
    """
    among = "" if only is None else "AND i.instance_id IN (SELECT unnest(?::VARCHAR[])) "
    return con.execute(
        "SELECT i.instance_id, i.rule_id, coalesce(o.new_person_id, i.person_id), i.trigger_ts, "
        "i.deadline_ts, i.due_at, i.status, i.trigger "
        "FROM moment_instances i LEFT JOIN person_overrides o ON o.old_person_id = i.person_id "
        f"WHERE i.status IN ('waiting', 'held') AND i.fire_at <= ? {among}"
        "ORDER BY i.fire_at LIMIT ?",
        [now, *([] if only is None else [list(only)]), limit],
    ).fetchall()


def undecide(con: Connection, instance_ids: Sequence[str]) -> None:
    """Undo decisions taken in the open transaction: the instances wait again (for the
    scheduler) and their outbox rows go. Only for instances decided in this transaction."""
    ids = [list(instance_ids)]
    con.execute(
        "DELETE FROM moment_deliveries WHERE instance_id IN (SELECT unnest(?::VARCHAR[]))", ids
    )
    con.execute(
        "UPDATE moment_instances SET status = 'waiting', reason = NULL, fire_at = due_at, "
        "decided_at = NULL WHERE instance_id IN (SELECT unnest(?::VARCHAR[]))",
        ids,
    )


def next_fire_at(con: Connection) -> datetime | None:
    row = con.execute(
        "SELECT min(fire_at) FROM moment_instances WHERE status IN ('waiting', 'held')"
    ).fetchone()
    return row[0] if row else None


def decide(con: Connection, decisions: list[tuple[str, str, str | None, datetime, datetime | None]]
           ) -> None:  # fmt: skip
    """Apply scheduler decisions: (instance_id, status, reason, fire_at, decided_at)."""
    if not decisions:
        return
    ids, statuses, reasons, fire_ats, decided = (list(c) for c in zip(*decisions, strict=True))
    table = pa.table({
        "instance_id": pa.array(ids, _S), "status": pa.array(statuses, _S),
        "reason": pa.array(reasons, _S), "fire_at": pa.array(fire_ats, _TS),
        "decided_at": pa.array(decided, _TS),
    })  # fmt: skip
    _stage(
        con, "_moment_decisions", table,
        "UPDATE moment_instances SET status = d.status, reason = d.reason, fire_at = d.fire_at, "
        "decided_at = d.decided_at FROM _moment_decisions d "
        "WHERE moment_instances.instance_id = d.instance_id",
    )  # fmt: skip


# -- deliveries (the outbox) -------------------------------------------------------------
_DELIVERY_COLUMNS = (
    ("delivery_id", _S), ("instance_id", _S), ("action_index", pa.int32()), ("rule_id", _S),
    ("rule_version", pa.int32()), ("person_id", _S), ("kind", _S), ("target", _S),
    ("title", _S), ("payload", _S), ("content_type", _S), ("status", _S),
    ("next_attempt_at", _TS), ("expires_at", _TS), ("created_at", _TS), ("updated_at", _TS),
)  # fmt: skip
DELIVERY_FIELDS = (
    "delivery_id", "instance_id", "action_index", "rule_id", "rule_version", "person_id", "kind",
    "target", "title", "payload", "content_type", "status", "attempts", "next_attempt_at",
    "expires_at", "last_status", "last_error", "created_at", "updated_at", "delivered_at",
    "replays",
)  # fmt: skip


def insert_deliveries(con: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Outbox rows in ``_DELIVERY_COLUMNS`` order; a second decision for an action is ignored."""
    if not rows:
        return 0
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {name: pa.array(values, type=kind)
         for (name, kind), values in zip(_DELIVERY_COLUMNS, columns, strict=True)}
    )  # fmt: skip
    names = ", ".join(name for name, _ in _DELIVERY_COLUMNS)
    return len(_stage(
        con, "_moment_deliveries", table,
        f"INSERT INTO moment_deliveries ({names}) SELECT {names} FROM _moment_deliveries "
        "ON CONFLICT DO NOTHING RETURNING delivery_id",
    ))  # fmt: skip


def _delivery_dicts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(DELIVERY_FIELDS, row, strict=True)) for row in rows]


def ready_deliveries(con: Connection, now: datetime, limit: int) -> list[dict[str, Any]]:
    rows = con.execute(
        f"SELECT {', '.join(DELIVERY_FIELDS)} FROM moment_deliveries "
        "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
        [now, limit],
    ).fetchall()
    return _delivery_dicts(rows)


def next_attempt_at(con: Connection) -> datetime | None:
    row = con.execute(
        "SELECT min(next_attempt_at) FROM moment_deliveries WHERE status = 'pending'"
    ).fetchone()
    return row[0] if row else None


def delivery(con: Connection, delivery_id: str) -> dict[str, Any] | None:
    rows = con.execute(
        f"SELECT {', '.join(DELIVERY_FIELDS)} FROM moment_deliveries WHERE delivery_id = ?",
        [delivery_id],
    ).fetchall()
    found = _delivery_dicts(rows)
    return found[0] if found else None


def record_attempt(con: Connection, delivery_id: str, *, status: str, attempts: int,
                   next_attempt_at: datetime, last_status: int | None, last_error: str | None,
                   now: datetime) -> None:  # fmt: skip
    """The outcome of one attempt (or a deferral, with the same ``attempts``)."""
    con.execute(
        "UPDATE moment_deliveries SET status = ?, attempts = ?, next_attempt_at = ?, "
        "last_status = ?, last_error = ?, updated_at = ?, "
        "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END "
        "WHERE delivery_id = ? AND status = 'pending'",
        [status, attempts, next_attempt_at, last_status, last_error, now, status, now,
         delivery_id],
    )  # fmt: skip


def record_attempts(con: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Many outcomes in one statement: (delivery_id, status, attempts, next_attempt_at,
    last_status, last_error, now) each; only rows still pending change."""
    if not rows:
        return
    names = ("delivery_id", "status", "attempts", "next_attempt_at", "last_status",
             "last_error", "now")  # fmt: skip
    kinds = (_S, _S, pa.int32(), _TS, pa.int32(), _S, _TS)
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {n: pa.array(c, type=k) for n, c, k in zip(names, columns, kinds, strict=True)}
    )
    _stage(
        con, "_moment_attempts", table,
        "UPDATE moment_deliveries SET status = a.status, attempts = a.attempts, "
        "next_attempt_at = a.next_attempt_at, last_status = a.last_status, "
        "last_error = a.last_error, updated_at = a.now, "
        "delivered_at = CASE WHEN a.status = 'delivered' THEN a.now ELSE delivered_at END "
        "FROM _moment_attempts a WHERE moment_deliveries.delivery_id = a.delivery_id "
        "AND moment_deliveries.status = 'pending'",
    )  # fmt: skip


def settle_many(con: Connection, finished: list[tuple[str, int, bool]], now: datetime) -> None:
    """:func:`settle_fallbacks` for many (instance_id, action_index, succeeded) at once."""
    while finished:
        table = pa.table({
            "instance_id": pa.array([f[0] for f in finished], _S),
            "next_index": pa.array([f[1] + 1 for f in finished], pa.int32()),
            "succeeded": pa.array([f[2] for f in finished], pa.bool_()),
        })  # fmt: skip
        changed = _stage(
            con, "_moment_settled", table,
            "UPDATE moment_deliveries SET status = CASE WHEN s.succeeded THEN 'skipped' "
            "ELSE 'pending' END, next_attempt_at = ?, updated_at = ?, "
            "last_error = CASE WHEN s.succeeded THEN "
            "'not needed: the previous action was delivered' ELSE last_error END "
            "FROM _moment_settled s WHERE moment_deliveries.instance_id = s.instance_id "
            "AND moment_deliveries.action_index = s.next_index "
            "AND moment_deliveries.status = 'standby' "
            "RETURNING moment_deliveries.instance_id, moment_deliveries.action_index, "
            "moment_deliveries.status",
            [now, now],
        )  # fmt: skip
        # a skipped fallback settles the one after it the same way
        finished = [(str(r[0]), int(r[1]), True) for r in changed if r[2] == "skipped"]


def settle_fallbacks(con: Connection, instance_id: str, action_index: int, succeeded: bool,
                     now: datetime) -> None:  # fmt: skip
    """After action ``action_index`` ends: the next standby action runs only if it failed."""
    row = con.execute(
        "SELECT delivery_id FROM moment_deliveries WHERE instance_id = ? AND action_index = ? "
        "AND status = 'standby'",
        [instance_id, action_index + 1],
    ).fetchone()
    if row is None:
        return
    if succeeded:
        con.execute(
            "UPDATE moment_deliveries SET status = 'skipped', last_error = ?, updated_at = ? "
            "WHERE delivery_id = ?",
            ["not needed: the previous action was delivered", now, row[0]],
        )
        settle_fallbacks(con, instance_id, action_index + 1, True, now)
    else:
        con.execute(
            "UPDATE moment_deliveries SET status = 'pending', next_attempt_at = ?, updated_at = ? "
            "WHERE delivery_id = ?",
            [now, now, row[0]],
        )


def fail_unrendered(con: Connection, delivery_id: str, error: str) -> None:
    con.execute(
        "UPDATE moment_deliveries SET last_error = ? WHERE delivery_id = ?", [error, delivery_id]
    )


def replay(con: Connection, delivery_id: str, now: datetime, expires_after: timedelta
           ) -> dict[str, Any] | None:  # fmt: skip
    """Put a failed or expired delivery back in the outbox under the same id."""
    found = delivery(con, delivery_id)
    if found is None or found["status"] not in ("failed", "expired"):
        return found
    con.execute(
        "UPDATE moment_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, "
        "expires_at = ?, replays = replays + 1, updated_at = ? WHERE delivery_id = ?",
        [now, now + expires_after, now, delivery_id],
    )
    return delivery(con, delivery_id)


def list_deliveries(con: Connection, *, failed_only: bool, rule_id: str | None, limit: int
                    ) -> list[dict[str, Any]]:  # fmt: skip
    where = ["TRUE"]
    params: list[Any] = []
    if failed_only:
        where.append("status IN ('failed', 'expired')")
    if rule_id is not None:
        where.append("rule_id = ?")
        params.append(rule_id)
    rows = con.execute(
        f"SELECT {', '.join(DELIVERY_FIELDS)} FROM moment_deliveries WHERE {' AND '.join(where)} "
        "ORDER BY created_at DESC, action_index LIMIT ?",
        [*params, limit],
    ).fetchall()
    return _delivery_dicts(rows)


# -- counters and stats -------------------------------------------------------------------
def bump_counters(con: Connection, counts: dict[tuple[str, str], int]) -> None:
    """Add to per-rule counters, all in one statement."""
    counts = {key: value for key, value in counts.items() if value}
    if not counts:
        return
    table = pa.table({
        "rule_id": pa.array([rule_id for rule_id, _ in counts], _S),
        "name": pa.array([name for _, name in counts], _S),
        "value": pa.array(list(counts.values()), pa.int64()),
    })  # fmt: skip
    _stage(
        con, "_moment_counts", table,
        "INSERT INTO moment_counters SELECT rule_id, name, value FROM _moment_counts "
        "ON CONFLICT DO UPDATE SET value = moment_counters.value + excluded.value",
    )  # fmt: skip


def stats(con: Connection) -> dict[str, dict[str, int]]:
    """Per rule_id: instance counts by status/reason, delivery counts by status, counters."""
    out: dict[str, dict[str, int]] = {}

    def add(rule_id: str, name: str, value: int) -> None:
        entry = out.setdefault(rule_id, {})
        entry[name] = entry.get(name, 0) + int(value)

    for rule_id, status, reason, count, late in con.execute(
        "SELECT rule_id, status, coalesce(reason, ''), count(*), sum(late_cancels) "
        "FROM moment_instances GROUP BY ALL"
    ).fetchall():
        add(rule_id, "triggered", count)
        add(rule_id, f"instances:{status}", count)
        add(rule_id, f"instances:{status}:{reason}", count)
        add(rule_id, "late_cancels", late or 0)
    for rule_id, status, count in con.execute(
        "SELECT rule_id, status, count(*) FROM moment_deliveries GROUP BY ALL"
    ).fetchall():
        add(rule_id, f"deliveries:{status}", count)
    for rule_id, name, value in con.execute(
        "SELECT rule_id, name, value FROM moment_counters"
    ).fetchall():
        add(rule_id, f"counter:{name}", value)
    return out


def forget_orphans(con: Connection) -> int:
    """Delete instances and deliveries of persons who no longer exist (``forget``)."""
    row = con.execute(
        "DELETE FROM moment_deliveries WHERE person_id NOT IN (SELECT person_id FROM persons)"
    ).fetchone()
    deleted = int(row[0]) if row else 0
    row = con.execute(
        "DELETE FROM moment_instances WHERE person_id NOT IN (SELECT person_id FROM persons)"
    ).fetchone()
    deleted += int(row[0]) if row else 0
    row = con.execute(  # where they were: location moments' place state
        "DELETE FROM moment_place_state WHERE person_id NOT IN (SELECT person_id FROM persons)"
    ).fetchone()
    return deleted + (int(row[0]) if row else 0)
