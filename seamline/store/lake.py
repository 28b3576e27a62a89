"""The Parquet events lake: what Spark, DuckDB, ClickHouse or Polars read at scale.

Layout under the lake directory (Hive-partitioned, one file per partition and collector)::

    events/event_date=2026-11-01/collector=<id>/part-0.parquet
    identities/collector=<id>/part-0.parquet
    person_overrides/collector=<id>/part-0.parquet
    _manifest/<collector id>.json

Every file is written to a temporary name and renamed into place (atomic on one file
system), so a reader never sees a half-written file, and re-exporting replaces a file
instead of adding one: exports are idempotent. Each ``seamline serve`` (collector) has its
own id and writes only its own files, so several collectors can publish into one lake;
readers deduplicate events on ``(source, message_id)`` across collectors (``source`` is
the source's name, the same on every collector that serves it).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from seamline.events import EVENT_COLUMNS
from seamline.events.columns import JSON_COLUMNS
from seamline.events.timestamps import utcnow

COLLECTOR_FILE = "collector_id"


def collector_id(data_dir: Path) -> str:
    """A stable id for this workspace's collector, created on first use."""
    path = data_dir / COLLECTOR_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = "c" + uuid.uuid4().hex[:12]
        path.write_text(value + "\n")
        return value


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _publish(con: duckdb.DuckDBPyConnection, query: str, params: list[Any], target: Path) -> int:
    """COPY a query to ``target`` atomically; returns the rows written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        row = con.execute(
            f"COPY ({query}) TO {_quote(temporary)} (FORMAT PARQUET, COMPRESSION ZSTD)", params
        ).fetchone()
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return int(row[0]) if row else 0


def _event_select() -> str:
    columns = [
        f"CAST(e.{c} AS VARCHAR) AS {c}" if c in JSON_COLUMNS else f"e.{c}"
        for c in EVENT_COLUMNS
        if c != "person_id"
    ]
    return (
        f"SELECT {', '.join(columns)}, e.person_id AS ingest_person_id, "
        "e.resolved_person_id AS person_id, s.name AS source "
        "FROM events_resolved e LEFT JOIN sources s ON s.source_id = e.source_id "
        "WHERE CAST(e.timestamp AS DATE) = ? ORDER BY e.resolved_person_id, e.timestamp"
    )


def export(con: duckdb.DuckDBPyConnection, lake: Path, collector: str,
           since: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """Write (or rewrite) the lake partitions of this collector.

    With ``since``, only the event dates that received events after it are rewritten
    (the continuous mode); otherwise every date is, and dates that no longer have events
    (after ``forget``) lose this collector's file.
    """
    lake.mkdir(parents=True, exist_ok=True)
    if since is None:
        dates = [r[0] for r in con.execute(
            "SELECT DISTINCT CAST(timestamp AS DATE) FROM events ORDER BY 1"
        ).fetchall()]  # fmt: skip
    else:
        dates = [r[0] for r in con.execute(
            "SELECT DISTINCT CAST(timestamp AS DATE) FROM events WHERE received_at > ? ORDER BY 1",
            [since]).fetchall()]  # fmt: skip
    mark = con.execute("SELECT max(received_at) FROM events").fetchone()
    written = 0
    files = []
    for day in dates:
        partition = lake / "events" / f"event_date={day.isoformat()}" / f"collector={collector}"
        target = partition / "part-0.parquet"
        written += _publish(con, _event_select(), [day], target)
        files.append(str(target.relative_to(lake)))
    if since is None:  # drop this collector's files for dates that have no events any more
        keep = {d.isoformat() for d in dates}
        for stale in (lake / "events").glob(f"event_date=*/collector={collector}/part-0.parquet"):
            if stale.parent.parent.name.removeprefix("event_date=") not in keep:
                stale.unlink()
    for table, query in (
        ("identities", "SELECT i.id_type, i.id_value, coalesce(o.new_person_id, i.person_id) AS "
                       "person_id, i.first_seen FROM identities i LEFT JOIN person_overrides o "
                       "ON o.old_person_id = i.person_id ORDER BY 1, 2"),
        ("person_overrides",
         "SELECT old_person_id, new_person_id FROM person_overrides ORDER BY 1"),
    ):  # fmt: skip
        target = lake / table / f"collector={collector}" / "part-0.parquet"
        _publish(con, query, [], target)
        files.append(str(target.relative_to(lake)))
    manifest = {
        "collector": collector,
        "exported_at": utcnow().isoformat(),
        "received_until": mark[0].isoformat() if mark and mark[0] else None,
        "dates": [d.isoformat() for d in dates],
        "events_written": written,
        "files": files,
        "format": "parquet; events partitioned by event_date and collector",
    }
    manifest_path = lake / "_manifest" / f"{collector}.json"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = manifest_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, manifest_path)
    return manifest


def last_mark(lake: Path, collector: str) -> datetime | None:
    try:
        manifest = json.loads((lake / "_manifest" / f"{collector}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    value = manifest.get("received_until")
    return datetime.fromisoformat(value) if value else None
