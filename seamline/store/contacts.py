"""The contact columns of ``events``: ``contact_email`` and ``contact_phone``.

What is stored is the **normalised** identifier, the one the identity service links: the
event's email (``traits.email`` of an identify call, else ``context.traits.email``; on other
calls ``context.traits.email``) trimmed and lower-cased, and its phone in E.164 (with the
``phone_region`` setting for numbers without a country code), both through
:func:`seamline.identity.identifiers.normalise`. A value that is absent, invalid or a
blocked placeholder is NULL. So the batch rebuild reads plain columns (no JSON, no
libphonenumber) and agrees with the incremental map by construction.

On ingest, :meth:`seamline.identity.service.IdentityService.stitch` writes these values
into the rows before the append. Rows stored before the columns existed are filled once by
:func:`migrate` (schema migration 6) with the same function over the JSON's values, and
:func:`backfill` serves the bulk loader the same way.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from seamline.identity.identifiers import IdentityRules, normalise

#: The JSON value of each contact, as text, with the ingest rule: an identify call's own
#: traits first, then ``context.traits`` (any call). ``contains`` skips the JSON parse for
#: rows whose text cannot hold the key; a JSON ``null`` counts as absent.
_RAW = """
CASE WHEN type = 'identify' AND contains(traits, '{key}')
     THEN nullif(CAST(traits->'{key}' AS VARCHAR), 'null') END AS own_{key},
CASE WHEN contains(context, '{key}')
     THEN nullif(CAST(context->'traits'->'{key}' AS VARCHAR), 'null') END AS shared_{key}
"""
_SOURCE = f"""
CREATE OR REPLACE TEMP TABLE _contact_source AS
SELECT rid, coalesce(own_email, shared_email) AS email,
       coalesce(own_phone, shared_phone) AS phone
FROM (SELECT rowid AS rid, {_RAW.format(key="email")}, {_RAW.format(key="phone")}
      FROM events {{where}})
WHERE coalesce(own_email, shared_email, own_phone, shared_phone) IS NOT NULL
"""
_UPDATE = """
UPDATE events SET contact_email = x.email, contact_phone = x.phone FROM (
    SELECT s.rid, e.value AS email, p.value AS phone FROM _contact_source s
    LEFT JOIN _contact_emails e ON e.raw = s.email
    LEFT JOIN _contact_phones p ON p.raw = s.phone
    WHERE e.value IS NOT NULL OR p.value IS NOT NULL
) x WHERE events.rowid = x.rid
"""


def _values(con: duckdb.DuckDBPyConnection, column: str, id_type: str,
            rules: IdentityRules, known: set[str]) -> pa.Table:  # fmt: skip
    """Each distinct JSON text of ``column`` and its normalised value."""
    raws = [r[0] for r in con.execute(
        f"SELECT DISTINCT {column} FROM _contact_source WHERE {column} IS NOT NULL").fetchall()]
    values: list[str | None] = []
    for raw in raws:
        value: Any = json.loads(raw)
        # a phone already stored as an identifier is in E.164, its own normal form
        # (normalise is idempotent on its output): skip libphonenumber for it
        values.append(value if isinstance(value, str) and value in known
                      else normalise(id_type, value, rules))  # fmt: skip
    return pa.table({"raw": pa.array(raws, pa.string()), "value": pa.array(values, pa.string())})


def backfill(con: duckdb.DuckDBPyConnection, rules: IdentityRules, where: str = "") -> int:
    """Fill ``contact_email`` / ``contact_phone`` of the events matching ``where`` (SQL,
    e.g. ``"WHERE contact_email IS NULL"``) from their JSON; returns the rows updated.

    Runs in the caller's transaction.
    """
    con.execute(_SOURCE.format(where=where))
    try:
        phones = {r[0] for r in con.execute(
            "SELECT id_value FROM identities WHERE id_type = 'phone'").fetchall()}
        tables = {"email": _values(con, "email", "email", rules, set()),
                  "phone": _values(con, "phone", "phone", rules, phones)}
        con.register("_contact_emails", tables["email"])
        con.register("_contact_phones", tables["phone"])
        try:
            rows = con.execute(_UPDATE).fetchall()
        finally:
            con.unregister("_contact_emails")
            con.unregister("_contact_phones")
    finally:
        con.execute("DROP TABLE IF EXISTS _contact_source")
    return int(rows[0][0]) if rows else 0


def migrate(con: duckdb.DuckDBPyConnection, rules: IdentityRules) -> None:
    """Schema migration 6: add the columns and fill them for every stored event."""
    con.execute("ALTER TABLE events ADD COLUMN contact_email VARCHAR")
    con.execute("ALTER TABLE events ADD COLUMN contact_phone VARCHAR")
    backfill(con, rules)
