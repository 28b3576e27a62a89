"""Tables for location-aware moments: the workspace's places and where each person is.

``moment_place_state`` holds, per (canonical person, place key), whether the person was
last seen inside, since when (event time of the last change) and the event time of the
last evidence: an older event arriving late does not move the state back. Rows of persons
who opt out of location moments are deleted, not kept.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from seamline.store.moments import Connection, _stage, person_aliases

MIGRATION = """
CREATE TABLE moment_places (
    name VARCHAR PRIMARY KEY,
    definition JSON NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE moment_place_state (
    person_id VARCHAR NOT NULL,
    place VARCHAR NOT NULL,
    inside BOOLEAN NOT NULL,
    since TIMESTAMP NOT NULL,
    seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (person_id, place)
);
"""

_TS = pa.timestamp("us")
_S = pa.string()


# -- the workspace's places ---------------------------------------------------------------
def load_places(con: Connection) -> list[dict[str, Any]]:
    """Every workspace place definition (``{name, lat, lon, radius, beacons}``), by name."""
    rows = con.execute("SELECT definition FROM moment_places ORDER BY name").fetchall()
    return [json.loads(row[0]) for row in rows]


def save_places(con: Connection, definitions: Sequence[dict[str, Any]], now: datetime) -> int:
    """Insert or replace places by name."""
    for definition in definitions:
        con.execute(
            "INSERT INTO moment_places VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
            "definition = excluded.definition, updated_at = excluded.updated_at",
            [definition["name"], json.dumps(definition), now],
        )
    return len(definitions)


def remove_place(con: Connection, name: str) -> bool:
    row = con.execute(
        "DELETE FROM moment_places WHERE name = ? RETURNING name", [name]
    ).fetchone()
    if row is not None:
        con.execute("DELETE FROM moment_place_state WHERE place = ?", [name])
    return row is not None


# -- where persons are ----------------------------------------------------------------------
def load_state(con: Connection, persons: Sequence[str]
               ) -> dict[str, dict[str, tuple[bool, datetime]]]:  # fmt: skip
    """canonical person -> {place key: (inside, seen_at)}."""
    rows = con.execute(
        "SELECT person_id, place, inside, seen_at FROM moment_place_state "
        "WHERE person_id IN (SELECT unnest(?::VARCHAR[]))",
        [sorted(set(persons))],
    ).fetchall()
    out: dict[str, dict[str, tuple[bool, datetime]]] = {}
    for person, place, inside, seen in rows:
        out.setdefault(str(person), {})[str(place)] = (bool(inside), seen)
    return out


def save_state(con: Connection, rows: list[tuple[str, str, bool, datetime, datetime]]) -> None:
    """Upsert (person, place, inside, since, seen_at); ``since`` only moves on a change."""
    if not rows:
        return
    person, place, inside, since, seen = (list(c) for c in zip(*rows, strict=True))
    table = pa.table({
        "person_id": pa.array(person, _S), "place": pa.array(place, _S),
        "inside": pa.array(inside, pa.bool_()), "since": pa.array(since, _TS),
        "seen_at": pa.array(seen, _TS),
    })  # fmt: skip
    _stage(
        con, "_moment_place_state", table,
        "INSERT INTO moment_place_state SELECT person_id, place, inside, since, seen_at "
        "FROM _moment_place_state ON CONFLICT DO UPDATE SET "
        "since = CASE WHEN moment_place_state.inside = excluded.inside "
        "THEN moment_place_state.since ELSE excluded.since END, "
        "inside = excluded.inside, seen_at = excluded.seen_at",
    )  # fmt: skip


def clear_state(con: Connection, persons: Sequence[str]) -> None:
    if persons:
        con.execute(
            "DELETE FROM moment_place_state WHERE person_id IN (SELECT unnest(?::VARCHAR[]))",
            [sorted(set(persons))],
        )


# -- consent ----------------------------------------------------------------------------------
def consent_signals(con: Connection, persons: Sequence[str], trait: str, revoked: str,
                    granted: str) -> dict[str, tuple[str, Any]]:  # fmt: skip
    """The latest consent signal per canonical person: ("event", name) for a revoke/grant
    event, or ("trait", value) for an identify call that set the trait."""
    aliases = person_aliases(con, persons)
    path = "$." + json.dumps(trait)  # a quoted JSON path key: any trait name is safe
    rows = con.execute(
        "SELECT person_id, event, type, json_extract(traits, ?) AS value, timestamp FROM events "
        "WHERE person_id IN (SELECT unnest(?::VARCHAR[])) AND ("
        "event IN (?, ?) OR (type = 'identify' AND json_extract(traits, ?) IS NOT NULL)) "
        "ORDER BY timestamp, received_at",
        [path, list(aliases), revoked, granted, path],
    ).fetchall()
    out: dict[str, tuple[str, Any]] = {}
    for person, event, kind, value, _ts in rows:  # in time order: the latest wins
        canonical = aliases[str(person)]
        if kind == "identify" and value is not None:
            out[canonical] = ("trait", json.loads(value) if isinstance(value, str) else value)
        elif event in (revoked, granted):
            out[canonical] = ("event", event)
    return out


def fired_at_places(con: Connection, persons: Sequence[str], since: datetime
                    ) -> list[tuple[str, str, str, datetime]]:  # fmt: skip
    """(canonical person, rule_id, place key, decided_at) of location moments fired lately."""
    aliases = person_aliases(con, persons)
    rows = con.execute(
        "SELECT person_id, rule_id, json_extract_string(trigger, '$.place.key'), decided_at "
        "FROM moment_instances WHERE status = 'fired' AND decided_at >= ? "
        "AND json_extract_string(trigger, '$.place.key') IS NOT NULL "
        "AND person_id IN (SELECT unnest(?::VARCHAR[]))",
        [since, list(aliases)],
    ).fetchall()
    return [(aliases[str(r[0])], str(r[1]), str(r[2]), r[3]) for r in rows]
