"""The stored contact columns (``contact_email``, ``contact_phone``): the normalised email and
phone the identity service links, written on ingest (fast and general path alike) and
backfilled by schema migration 6 for events stored before the columns existed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

import seamline
from seamline.collect.pipeline import RequestInfo
from seamline.store.database import DATABASE_FILE
from seamline.store.migrations import MIGRATIONS

GB = seamline.settings.Settings(phone_region="GB")


def _event(n: int, kind: str, **fields: Any) -> dict[str, Any]:
    event = {"type": kind, "messageId": f"c{n}", "timestamp": f"2026-11-01T10:{n:02d}:00Z"}
    if kind == "track":
        event["event"] = "Something"
    return {**event, **fields}


EVENTS = [
    _event(1, "identify", userId="u-ana", anonymousId="a-1",
           traits={"email": "  Ana@Bank.EXAMPLE ", "phone": "07700 900123"}),
    # an identify's own traits win over context.traits
    _event(2, "identify", userId="u-ana", traits={"email": "ana@bank.example"},
           context={"traits": {"email": "other@bank.example", "phone": "+44 7700 900123"}}),
    # other calls: context.traits only (traits of a track are properties of no one)
    _event(3, "track", anonymousId="call-1", context={"traits": {"phone": "(07700) 900-123"}}),
    _event(4, "track", anonymousId="esp-1", context={"traits": {"email": "ANA@bank.example"}}),
    # placeholders, invalid values and odd types store NULL
    _event(5, "identify", anonymousId="a-2", traits={"email": "undefined", "phone": "12"}),
    _event(6, "identify", anonymousId="a-3", traits={"email": "no-at-sign", "phone": 0}),
    _event(7, "track", anonymousId="a-4", context={"traits": {"email": {"x": "a@b.c"}}}),
    _event(8, "identify", anonymousId="a-5", traits={"email": None},
           context={"traits": {"email": "late@bank.example", "phone": 447700900999}}),
]  # fmt: skip
EXPECTED = {
    "c1": ("ana@bank.example", "+447700900123"),
    "c2": ("ana@bank.example", "+447700900123"),
    "c3": (None, "+447700900123"),
    "c4": ("ana@bank.example", None),
    "c5": (None, None),
    "c6": (None, None),
    "c7": (None, None),
    "c8": ("late@bank.example", "+447700900999"),
}


def _stored(ws: seamline.Workspace) -> dict[str, tuple[str | None, str | None]]:
    rows = ws.store.query("SELECT message_id, contact_email, contact_phone FROM events")
    return {m: (e, p) for m, e, p in rows}


def _check_linked(ws: seamline.Workspace) -> None:
    """Every stored contact is an identifier of the event's own person."""
    rows = ws.store.query("""
        SELECT e.message_id, k.kind, k.value, e.resolved_person_id,
               coalesce(o.new_person_id, i.person_id)
        FROM events_resolved e,
             LATERAL (SELECT 'email' AS kind, e.contact_email AS value
                      UNION ALL SELECT 'phone', e.contact_phone) k
        LEFT JOIN identities i ON i.id_type = k.kind AND i.id_value = k.value
        LEFT JOIN person_overrides o ON o.old_person_id = i.person_id
        WHERE k.value IS NOT NULL
    """)  # fmt: skip
    assert len(rows) >= 8
    for message_id, kind, value, event_person, linked_person in rows:
        assert linked_person == event_person, (message_id, kind, value)


def test_ingest_stores_the_normalised_contacts_the_identity_service_linked(
    data_dir: Path,
) -> None:
    with seamline.Workspace(data_dir, GB) as ws:
        ws.add_source("app", "mobile")
        assert ws.import_events("app", EVENTS)["stored"] == len(EVENTS)  # general path
        assert _stored(ws) == EXPECTED
        _check_linked(ws)
        person = ws.person("ana@bank.example")
        kinds = {(i["kind"], i["value"]) for i in person["identities"]}
        assert {("email", "ana@bank.example"), ("phone", "+447700900123")} <= kinds
        assert ws.rebuild_identity()["agrees"]


def test_lake_export_carries_the_contact_columns(data_dir: Path, tmp_path: Path) -> None:
    with seamline.Workspace(data_dir, GB) as ws:
        ws.add_source("app", "mobile")
        ws.import_events("app", EVENTS)
        ws.lake_export(tmp_path / "lake")
    table = pq.read_table(tmp_path / "lake" / "events")
    exported = {m: (e, p) for m, e, p in zip(table.column("message_id").to_pylist(),
                                              table.column("contact_email").to_pylist(),
                                              table.column("contact_phone").to_pylist(),
                                              strict=True)}  # fmt: skip
    assert exported == EXPECTED


def test_fast_path_stores_the_same_contacts(data_dir: Path) -> None:
    with seamline.Workspace(data_dir, GB) as ws:
        key = ws.add_source("app", "mobile")["write_key"]
        body = json.dumps({"writeKey": key, "batch": EVENTS}).encode()
        result = ws.collector.accept(body, batch=True, forced_type=None,
                                     info=RequestInfo()).result()  # fmt: skip
        assert result.stored == len(EVENTS)
        assert _stored(ws) == EXPECTED
        _check_linked(ws)


def _old_workspace(data_dir: Path) -> None:
    """A workspace as schema version 5 left it: events without the contact columns."""
    data_dir.mkdir(parents=True)
    con = duckdb.connect(str(data_dir / DATABASE_FILE))
    con.execute("CREATE TABLE schema_migrations "
                "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)")
    for version, description, sql in MIGRATIONS:
        if version > 5:
            break
        assert isinstance(sql, str)
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, description])
    con.execute("INSERT INTO sources VALUES ('src_old', 'app', 'mobile', NULL, 'wk', TRUE, now())")
    for n, event in enumerate(EVENTS):
        con.execute(
            "INSERT INTO events (dedup_key, message_id, source_id, type, user_id, anonymous_id, "
            "timestamp, received_at, traits, context) VALUES (?, ?, 'src_old', ?, ?, ?, "
            "TIMESTAMP '2026-11-01 10:00:00', TIMESTAMP '2026-11-01 10:00:00', ?, ?)",
            [n, event["messageId"], event["type"], event.get("userId"), event.get("anonymousId"),
             json.dumps(event["traits"]) if "traits" in event else None,
             json.dumps(event["context"]) if "context" in event else None],
        )  # fmt: skip
    # one phone already known to the incremental map (E.164: taken as it is)
    con.execute("INSERT INTO identities VALUES "
                "('phone', '+447700900999', 'p-old', TIMESTAMP '2026-11-01 10:00:00', 'c8', NULL)")
    con.close()


def test_migration_backfills_events_stored_before_the_columns(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    _old_workspace(data_dir)
    with seamline.Workspace(data_dir, GB) as ws:
        assert ws.store.schema_version() >= 6
        assert _stored(ws) == EXPECTED
        # new events land beside the backfilled ones with the same definition
        ws.import_events("app", [_event(9, "track", anonymousId="esp-2",
                                        context={"traits": {"email": " NEW@bank.example"}})])
        assert _stored(ws)["c9"] == ("new@bank.example", None)
