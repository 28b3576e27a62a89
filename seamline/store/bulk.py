"""Bulk load a generated world (benchmarks): events, sources and the person map in one go.

This skips the ingest pipeline (no validation, no incremental stitching): the caller hands
over rows already shaped like the events table and a person id per row. Identities and
persons are derived from the loaded events, so the stored person map is exactly the one
the rows carry. Only for building large benchmark workspaces quickly.
"""

from __future__ import annotations

import pyarrow as pa

from seamline.identity.identifiers import IdentityRules
from seamline.store import contacts
from seamline.store.database import Store

_IDENTITIES = """
INSERT INTO identities
SELECT t, v, any_value(person_id), min(timestamp), NULL, NULL FROM (
    SELECT 'user_id' AS t, user_id AS v, person_id, timestamp FROM events WHERE user_id IS NOT NULL
    UNION ALL SELECT 'anonymous_id', anonymous_id, person_id, timestamp FROM events
        WHERE anonymous_id IS NOT NULL
    UNION ALL SELECT 'device_id', device_id, person_id, timestamp FROM events
        WHERE device_id IS NOT NULL
    UNION ALL SELECT 'email', contact_email, person_id, timestamp FROM events
        WHERE contact_email IS NOT NULL
    UNION ALL SELECT 'phone', contact_phone, person_id, timestamp FROM events
        WHERE contact_phone IS NOT NULL
) GROUP BY t, v
"""


def load_world(store: Store, rows: pa.Table, person_ids: pa.Array,
               sources: tuple[tuple[str, str, str], ...]) -> int:  # fmt: skip
    """Append ``rows`` (events-table columns; ``channel`` picks the source) and their
    person map to an empty workspace; returns the number of events stored."""
    con = store.writer_connection()
    try:
        by_channel = {}
        for name, channel, unit in sources:
            found = con.execute("SELECT source_id FROM sources WHERE name = ?", [name]).fetchall()
            source_id = found[0][0] if found else Store.insert_source(con, name, channel,
                                                                   unit).source_id  # fmt: skip
            by_channel[channel] = (source_id, unit)
        mapping = pa.table({"channel": list(by_channel),
                            "source_id": [v[0] for v in by_channel.values()],
                            "unit": [v[1] for v in by_channel.values()]})  # fmt: skip
        staged = rows.append_column("person_id", person_ids)
        con.register("_bulk", staged)
        con.register("_bulk_sources", mapping)
        con.execute("BEGIN")
        con.execute("""
            INSERT INTO events (dedup_key, message_id, source_id, type, event, name, user_id,
                anonymous_id, person_id, channel, unit, timestamp, original_timestamp,
                received_at, os_name, app_version, device_id, properties, traits, context)
            SELECT md5_number(s.source_id || chr(0) || b.message_id), b.message_id, s.source_id,
                b.type, b.event, b.name, b.user_id, b.anonymous_id, b.person_id, b.channel,
                s.unit, b.timestamp, b.timestamp, b.timestamp, b.os_name, b.app_version,
                b.device_id, '{}', b.traits, b.context
            FROM _bulk b JOIN _bulk_sources s USING (channel)
        """)
        # the contact columns from the JSON, normalised as ingest does
        contacts.backfill(con, IdentityRules())
        con.execute("""
            INSERT INTO persons
            SELECT person_id, row_number() OVER (ORDER BY min(timestamp), person_id),
                   min(timestamp), 'bulk', person_id
            FROM events WHERE person_id IS NOT NULL GROUP BY person_id
        """)
        con.execute(_IDENTITIES)
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])
    finally:
        con.unregister("_bulk")
        con.unregister("_bulk_sources")
        con.close()
