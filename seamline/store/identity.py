"""Identity tables: load the graph, persist a group's changes, and answer lookups.

Persons are never rewritten at merge time: ``person_overrides`` maps every merged-away
person id to its survivor (kept flat), and ``events_resolved`` joins it so every query
sees the stitched person at once.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from seamline.identity.stitcher import Changes, IdentityState, Key

MIGRATION = """
CREATE TABLE persons (
    person_id VARCHAR PRIMARY KEY,
    seq BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    seed_type VARCHAR NOT NULL,
    seed_value VARCHAR NOT NULL
);
CREATE TABLE identities (
    id_type VARCHAR NOT NULL,
    id_value VARCHAR NOT NULL,
    person_id VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    message_id VARCHAR,
    linked_via VARCHAR,
    PRIMARY KEY (id_type, id_value)
);
CREATE TABLE person_merges (
    merged_at TIMESTAMP NOT NULL,
    loser VARCHAR NOT NULL,
    winner VARCHAR NOT NULL,
    message_id VARCHAR,
    via VARCHAR
);
CREATE TABLE person_overrides (
    old_person_id VARCHAR PRIMARY KEY,
    new_person_id VARCHAR NOT NULL
);
CREATE TABLE identity_refusals (
    refused_at TIMESTAMP NOT NULL,
    message_id VARCHAR,
    id_type VARCHAR NOT NULL,
    id_value VARCHAR NOT NULL,
    person_id VARCHAR,
    reason VARCHAR NOT NULL,
    detail VARCHAR
);
CREATE TABLE identity_hubs (
    id_type VARCHAR NOT NULL,
    id_value VARCHAR NOT NULL,
    since TIMESTAMP NOT NULL,
    detail VARCHAR,
    PRIMARY KEY (id_type, id_value)
);
CREATE TABLE suppressions (
    key_hash VARCHAR PRIMARY KEY,
    id_type VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    person_id VARCHAR
);
CREATE VIEW events_resolved AS
SELECT e.*, coalesce(o.new_person_id, e.person_id) AS resolved_person_id
FROM events e LEFT JOIN person_overrides o ON o.old_person_id = e.person_id;
"""

_TS = pa.timestamp("us")


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    # In an aborted transaction unregistering fails too; never let that hide the real error.
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)


def suppression_hash(key: Key) -> str:
    # Suppressed identifiers are kept only as hashes: forgetting a person keeps no PII.
    return hashlib.sha256(f"{key[0]}\x00{key[1]}".encode()).hexdigest()


def load_state(con: duckdb.DuckDBPyConnection) -> tuple[IdentityState, set[str]]:
    state = IdentityState()
    for person, seq in con.execute("SELECT person_id, seq FROM persons").fetchall():
        state.seq[person] = seq
        state.members.setdefault(person, [])
    state.next_seq = max(state.seq.values(), default=0) + 1
    rows = con.execute("SELECT id_type, id_value, person_id, first_seen FROM identities").fetchall()
    for id_type, value, person, first_seen in rows:
        key = (id_type, value)
        state.person_of[key] = person
        state.members.setdefault(person, []).append(key)
        state.first_seen[key] = first_seen
    hubs = con.execute("SELECT id_type, id_value FROM identity_hubs").fetchall()
    state.hubs = {(t, v) for t, v in hubs}
    suppressed = {h for (h,) in con.execute("SELECT key_hash FROM suppressions").fetchall()}
    return state, suppressed


def _insert(con: duckdb.DuckDBPyConnection, table: str, names: list[str],
            types: list[pa.DataType], rows: list[tuple[Any, ...]], *,
            keyed: bool = True) -> None:  # fmt: skip
    if not rows:
        return
    columns = list(zip(*rows, strict=True))
    # read by DuckDB's replacement scan (cheaper than register(): no catalog change)
    _identity_staged = pa.table({n: pa.array(c, type=t) for n, c, t in
                                 zip(names, columns, types, strict=True)})  # fmt: skip
    con.execute(
        f"INSERT INTO {table} ({', '.join(names)}) "
        f"SELECT {', '.join(names)} FROM _identity_staged"
        + (" ON CONFLICT DO NOTHING" if keyed else "")
    )


def persist(con: duckdb.DuckDBPyConnection, changes: Changes) -> None:
    """Write one group's identity changes inside the caller's transaction."""
    s = pa.string()
    _insert(con, "persons", ["person_id", "seq", "created_at", "seed_type", "seed_value"],
            [s, pa.int64(), _TS, s, s], changes.persons)  # fmt: skip
    _insert(con, "identities",
            ["id_type", "id_value", "person_id", "first_seen", "message_id", "linked_via"],
            [s, s, s, _TS, s, s], changes.identities)  # fmt: skip
    _insert(con, "identity_refusals",
            ["refused_at", "message_id", "id_type", "id_value", "person_id", "reason", "detail"],
            [_TS, s, s, s, s, s, s], changes.refusals, keyed=False)  # fmt: skip
    _insert(con, "identity_hubs", ["id_type", "id_value", "since", "detail"],
            [s, s, _TS, s], changes.hubs)  # fmt: skip
    if not changes.merges:
        return
    _insert(con, "person_merges", ["merged_at", "loser", "winner", "message_id", "via"],
            [_TS, s, s, s, s], changes.merges, keyed=False)  # fmt: skip
    final: dict[str, str] = {}
    for _, loser, winner, _, _ in changes.merges:
        final[loser] = winner
    for loser in final:  # follow chains inside the group: A->B, B->C gives A->C
        seen = {loser}
        while final[loser] in final and final[loser] not in seen:
            seen.add(final[loser])
            final[loser] = final[final[loser]]
    mapping = pa.table({"loser": list(final), "winner": list(final.values())})
    con.register("_merges", mapping)
    try:
        con.execute(
            "UPDATE identities SET person_id = m.winner FROM _merges m "
            "WHERE identities.person_id = m.loser"
        )
        con.execute(
            "UPDATE person_overrides SET new_person_id = m.winner FROM _merges m "
            "WHERE person_overrides.new_person_id = m.loser"
        )
        con.execute(
            "INSERT INTO person_overrides SELECT loser, winner FROM _merges "
            "ON CONFLICT DO NOTHING"
        )
    finally:
        _unregister(con, "_merges")


def resolve_person(con: duckdb.DuckDBPyConnection, person_id: str) -> str:
    row = con.execute(
        "SELECT new_person_id FROM person_overrides WHERE old_person_id = ?", [person_id]
    ).fetchone()
    return str(row[0]) if row else person_id


def forget(
    con: duckdb.DuckDBPyConnection, person: str, keys: list[Key], at: datetime
) -> dict[str, int]:
    """Delete a person's events, identities and derived rows; suppress its identifiers."""
    olds = [person] + [
        r[0]
        for r in con.execute(
            "SELECT old_person_id FROM person_overrides WHERE new_person_id = ?", [person]
        ).fetchall()
    ]
    placeholders = ", ".join("?" for _ in olds)
    events = con.execute(
        f"DELETE FROM events WHERE person_id IN ({placeholders})", olds
    ).fetchone()
    deleted_events = int(events[0]) if events else 0
    failed = 0
    for _, value in keys:
        row = con.execute(
            "DELETE FROM failed_events WHERE contains(raw, ?)", [value]
        ).fetchone()
        failed += int(row[0]) if row else 0
    con.execute(f"DELETE FROM identities WHERE person_id IN ({placeholders})", olds)
    con.execute(f"DELETE FROM person_overrides WHERE new_person_id IN ({placeholders})", olds)
    con.execute(f"DELETE FROM persons WHERE person_id IN ({placeholders})", olds)
    for key in keys:
        con.execute(
            "DELETE FROM identity_refusals WHERE id_type = ? AND id_value = ?", list(key)
        )
        con.execute("DELETE FROM identity_hubs WHERE id_type = ? AND id_value = ?", list(key))
        con.execute(
            "INSERT INTO suppressions VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [suppression_hash(key), key[0], at, person],
        )
    con.execute(f"DELETE FROM identity_refusals WHERE person_id IN ({placeholders})", olds)
    con.execute(
        f"DELETE FROM person_merges WHERE loser IN ({placeholders}) OR winner IN ({placeholders})",
        olds + olds,
    )
    return {"events": deleted_events, "failed_events": failed, "identifiers": len(keys)}


# -- batch rebuild ------------------------------------------------------------------------
# Observations are re-derived from the stored events with the same rules as the
# incremental path, in SQL; emails and phones come normalised from the contact columns
# (seamline.store.contacts).
_FOLDED = "lower(trim(trim(v), '\"'''))"  # trimmed, quotes stripped, lower case
_BLOCKED_SQL = f"{_FOLDED} IN ({{blocked}}) OR regexp_full_match({_FOLDED}, '[0\\-]*')"
_OBSERVATIONS = """
CREATE OR REPLACE TEMP TABLE _raw_obs AS
WITH src AS (
    SELECT dedup_key AS ev, timestamp AS ts, type, user_id, anonymous_id, device_id,
           previous_id, contact_email AS email, contact_phone AS phone
    FROM events
)
SELECT ev, ts, 'user_id' AS t, trim(user_id) AS v FROM src WHERE user_id IS NOT NULL
UNION ALL SELECT ev, ts, 'anonymous_id', trim(anonymous_id) FROM src
    WHERE anonymous_id IS NOT NULL
UNION ALL SELECT ev, ts, 'device_id', trim(device_id) FROM src WHERE device_id IS NOT NULL
UNION ALL SELECT ev, ts, 'email', email FROM src WHERE email IS NOT NULL
UNION ALL SELECT ev, ts, 'phone', phone FROM src WHERE phone IS NOT NULL
UNION ALL SELECT ev, ts, 'previous_id', trim(previous_id) FROM src
    WHERE type = 'alias' AND previous_id IS NOT NULL
"""


def rebuild(con: duckdb.DuckDBPyConnection, blocked: list[str],
            id_priority: dict[str, int]) -> dict[str, Any]:
    """Connected components over every stored identifier, with the static guardrails.

    Returns a report comparing the components with the incremental person map.
    """
    con.execute(_OBSERVATIONS)
    blocked_list = ", ".join("'" + b.replace("'", "''") + "'" for b in blocked)
    priorities = pa.table({"t": list(id_priority), "priority": list(id_priority.values())})
    con.register("_priority", priorities)
    try:
        con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _obs AS
        WITH kept AS (
            SELECT * FROM _raw_obs
            WHERE v IS NOT NULL AND v <> '' AND NOT ({_BLOCKED_SQL.format(blocked=blocked_list)})
        ), users AS (SELECT DISTINCT v FROM kept WHERE t = 'user_id')
        SELECT ev, ts,
               CASE WHEN t <> 'previous_id' THEN t
                    WHEN v IN (SELECT v FROM users) THEN 'user_id' ELSE 'anonymous_id' END AS t,
               v
        FROM kept
        """)
        con.execute("""
        CREATE OR REPLACE TEMP TABLE _node AS
        SELECT DISTINCT t || ':' || v AS node, t FROM _obs;
        CREATE OR REPLACE TEMP TABLE _edge AS
        WITH ranked AS (
            SELECT ev, t, t || ':' || v AS node,
                   row_number() OVER (PARTITION BY ev ORDER BY priority, v) AS rk
            FROM _obs JOIN _priority USING (t)
        )
        SELECT DISTINCT a.node AS a, b.node AS b, a.t AS ta, b.t AS tb
        FROM ranked a JOIN ranked b ON a.ev = b.ev AND a.rk = 1 AND b.rk > 1;
        -- a device or contact key seen with two user ids is shared: it links nobody
        CREATE OR REPLACE TEMP TABLE _hub AS
        SELECT x AS node FROM (
            SELECT a AS x, tb AS ty, b AS y, ta AS tx FROM _edge
            UNION ALL SELECT b, ta, a, tb FROM _edge)
        WHERE tx <> 'user_id' AND ty = 'user_id'
        GROUP BY x HAVING count(DISTINCT y) > 1;
        -- two person keys never link directly (an alias between two user ids is refused)
        CREATE OR REPLACE TEMP TABLE _sym AS
        SELECT a, b FROM _edge
        WHERE NOT (ta = 'user_id' AND tb = 'user_id')
          AND a NOT IN (SELECT node FROM _hub) AND b NOT IN (SELECT node FROM _hub)
        UNION SELECT b, a FROM _edge
        WHERE NOT (ta = 'user_id' AND tb = 'user_id')
          AND a NOT IN (SELECT node FROM _hub) AND b NOT IN (SELECT node FROM _hub);
        CREATE OR REPLACE TEMP TABLE _cc AS
        WITH RECURSIVE label(node, comp) USING KEY (node) AS (
            SELECT node, node FROM _node WHERE node NOT IN (SELECT node FROM _hub)
            UNION
            SELECT s.b, min(l.comp)
            FROM label l JOIN _sym s ON s.a = l.node JOIN recurring.label r ON r.node = s.b
            WHERE l.comp < r.comp
            GROUP BY s.b
        )
        SELECT node, comp FROM label;
        """)
        report = con.execute("""
        WITH live AS (
            SELECT id_type || ':' || id_value AS node, person_id FROM identities
        ), joined AS (
            SELECT c.node, c.comp, l.person_id FROM _cc c JOIN live l USING (node)
        )
        SELECT
            (SELECT count(*) FROM _node),
            (SELECT count(DISTINCT comp) FROM _cc),
            (SELECT count(*) FROM _hub),
            (SELECT count(*) FROM (SELECT comp FROM joined GROUP BY comp
                                   HAVING count(DISTINCT person_id) > 1)),
            (SELECT count(*) FROM (SELECT person_id FROM joined GROUP BY person_id
                                   HAVING count(DISTINCT comp) > 1)),
            (SELECT count(*) FROM _cc WHERE node NOT IN (SELECT node FROM live)),
            (SELECT count(*) FROM (SELECT comp FROM _cc JOIN _node USING (node)
                                   WHERE t = 'user_id' GROUP BY comp HAVING count(*) > 1))
        """).fetchone()
        examples = con.execute("""
        WITH joined AS (
            SELECT c.comp, i.person_id FROM _cc c
            JOIN identities i ON c.node = i.id_type || ':' || i.id_value
        )
        SELECT comp, list(DISTINCT person_id) FROM joined GROUP BY comp
        HAVING count(DISTINCT person_id) > 1 ORDER BY comp LIMIT 5
        """).fetchall()
    finally:
        _unregister(con, "_priority")
    assert report is not None
    return {
        "identifiers": report[0],
        "components": report[1],
        "hubs": report[2],
        "split_in_incremental": report[3],
        "merged_in_incremental_only": report[4],
        "not_in_incremental": report[5],
        "components_with_several_user_ids": report[6],
        "agrees": report[3] == 0 and report[4] == 0,
        "examples": [{"component": c, "persons": p} for c, p in examples],
    }


# -- lookups --------------------------------------------------------------------------------
def find_identities(con: duckdb.DuckDBPyConnection, keys: list[Key]) -> list[tuple[str, str, str]]:
    """(type, value, resolved person) for the keys that are stored identifiers."""
    found = []
    for id_type, value in keys:
        row = con.execute(
            "SELECT i.id_type, i.id_value, coalesce(o.new_person_id, i.person_id) "
            "FROM identities i LEFT JOIN person_overrides o ON o.old_person_id = i.person_id "
            "WHERE i.id_type = ? AND i.id_value = ?",
            [id_type, value],
        ).fetchone()
        if row:
            found.append((str(row[0]), str(row[1]), str(row[2])))
    return found


def is_hub(con: duckdb.DuckDBPyConnection, key: Key) -> str | None:
    row = con.execute(
        "SELECT detail FROM identity_hubs WHERE id_type = ? AND id_value = ?", list(key)
    ).fetchone()
    return str(row[0]) if row else None


def person_profile(con: duckdb.DuckDBPyConnection, person: str, limit: int) -> dict[str, Any]:
    identities = con.execute(
        "SELECT id_type, id_value, first_seen, message_id, linked_via FROM identities "
        "WHERE person_id = ? ORDER BY first_seen, id_type, id_value",
        [person],
    ).fetchall()
    values = [(t, v) for t, v, *_ in identities]
    refusals = con.execute(
        # refusals about this person's identifiers, or made on this person's own events
        "SELECT refused_at, id_type, id_value, reason, detail, message_id FROM identity_refusals "
        "WHERE person_id = ? OR message_id IN "
        "(SELECT message_id FROM events_resolved WHERE resolved_person_id = ?) "
        "ORDER BY refused_at LIMIT 100",
        [person, person],
    ).fetchall()
    merges = con.execute(
        "SELECT merged_at, loser, message_id, via FROM person_merges WHERE winner = ? "
        "ORDER BY merged_at",
        [person],
    ).fetchall()
    events = con.execute(
        "SELECT e.timestamp, e.channel, e.type, e.event, s.name, e.unit, e.message_id "
        "FROM events_resolved e LEFT JOIN sources s USING (source_id) "
        "WHERE e.resolved_person_id = ? ORDER BY e.timestamp, e.message_id LIMIT ?",
        [person, limit],
    ).fetchall()
    count = con.execute(
        "SELECT count(*) FROM events_resolved WHERE resolved_person_id = ?", [person]
    ).fetchone()
    return {
        "person_id": person,
        "identities": [
            {"kind": t, "value": v, "first_seen": f.isoformat(), "message_id": m,
             "linked_via": via}
            for t, v, f, m, via in identities
        ],
        "merged": [
            {"at": at.isoformat(), "person_id": loser, "message_id": m, "via": via}
            for at, loser, m, via in merges
        ],
        "refused": [
            {"at": at.isoformat(), "kind": t, "value": v, "reason": reason, "detail": detail,
             "message_id": m}
            for at, t, v, reason, detail, m in refusals
        ],
        "event_count": int(count[0]) if count else 0,
        "events": [
            {"timestamp": ts.isoformat(), "channel": channel, "type": kind, "event": name,
             "source": source, "unit": unit, "message_id": m}
            for ts, channel, kind, name, source, unit, m in events
        ],
        "identifier_count": len(values),
    }  # fmt: skip
