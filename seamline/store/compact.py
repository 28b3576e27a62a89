"""Compaction: rewrite the workspace file so deleted rows leave the disk.

DuckDB deletes logically: after ``DELETE`` (and ``CHECKPOINT``, and ``VACUUM``) the
deleted values can stay in the file's blocks until those blocks are reused. ``seamline
forget`` therefore removes a person from every query at once, and compaction removes
the bytes: the database is copied table by table into a fresh file (``COPY FROM
DATABASE``, which writes only live rows), the copy is checked, synced, and renamed
over the old file atomically. A crash at any point leaves either the old file or the
new one, never a mix.

It needs the file to itself: DuckDB lets one process open it, so compaction refuses
while a server owns the workspace (the CLI says so); stop the server, compact, start
it again.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import duckdb

from seamline.errors import SeamlineError, StoreUnavailable
from seamline.store.database import DATABASE_FILE

COMPACT_SUFFIX = ".compact"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _counts(con: duckdb.DuckDBPyConnection, catalog: str) -> dict[str, int]:
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? "
        "AND NOT temporary ORDER BY 1, 2",
        [catalog],
    ).fetchall()
    counts = {}
    for schema, table in tables:
        row = con.execute(f'SELECT count(*) FROM "{catalog}"."{schema}"."{table}"').fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def compact(data_dir: Path, *, force_compression: str | None = None) -> dict[str, Any]:
    """Rewrite ``<data_dir>/seamline.duckdb`` into a fresh file and swap it in.

    ``force_compression`` (DuckDB's setting, e.g. ``"uncompressed"``) is for tests that
    grep the file's bytes. Returns sizes, row counts and the time taken.
    """
    path = data_dir / DATABASE_FILE
    if not path.exists():
        raise SeamlineError(f"No workspace file at {path}.", code="no_workspace", status=404)
    fresh = path.with_name(path.name + COMPACT_SUFFIX)
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)  # a compaction that died half-way
    started = time.monotonic()
    before = path.stat().st_size
    wal = path.with_name(path.name + ".wal")
    wal_before = wal.stat().st_size if wal.exists() else 0
    try:
        con = duckdb.connect(str(path))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise SeamlineError(
                f"The workspace {data_dir} is in use by another process; stop it, then "
                "run `seamline compact` again.",
                code="workspace_locked",
                status=409,
            ) from None
        raise StoreUnavailable(f"Cannot open {path}: {exc}") from None
    try:
        con.execute("SET enable_progress_bar = false")
        if force_compression:
            con.execute("SET force_compression = ?", [force_compression])
        con.execute("CHECKPOINT")  # the WAL is merged in, so the copy sees everything
        old = str(con.execute("SELECT current_database()").fetchone()[0])  # type: ignore[index]
        con.execute(f"ATTACH '{fresh}' AS seamline_compact")
        try:
            con.execute(f'COPY FROM DATABASE "{old}" TO seamline_compact')
            con.execute("CHECKPOINT seamline_compact")
            counts, copied = _counts(con, old), _counts(con, "seamline_compact")
        finally:
            con.execute("DETACH seamline_compact")
        if counts != copied:
            raise StoreUnavailable(
                f"The compacted copy differs from {path} ({counts} vs {copied}); the "
                "workspace was left as it was."
            )
    except BaseException:
        con.close()
        fresh.unlink(missing_ok=True)
        raise
    con.close()
    if wal.exists() and wal.stat().st_size:
        fresh.unlink(missing_ok=True)  # a WAL replayed onto the new file would corrupt it
        raise StoreUnavailable(f"{wal} was not merged into the file; nothing was changed.")
    wal.unlink(missing_ok=True)
    _fsync(fresh)
    os.replace(fresh, path)
    with contextlib.suppress(OSError):  # make the rename durable
        _fsync(data_dir)
    return {
        "file": str(path),
        "bytes_before": before + wal_before,
        "bytes_after": path.stat().st_size,
        "tables": len(counts),
        "rows": sum(counts.values()),
        "seconds": round(time.monotonic() - started, 2),
    }
