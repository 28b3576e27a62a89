"""The Parquet lake: readable by plain DuckDB, idempotent, incremental, several collectors."""

from __future__ import annotations

from pathlib import Path

import duckdb

import seamline
from tests.conftest import Server, run_cli


def events(prefix: str, n: int, day: int = 1) -> list[dict[str, object]]:
    return [{"type": "track", "event": "Opened", "userId": f"u{i % 4}", "messageId": f"{prefix}{i}",
             "timestamp": f"2026-11-0{day + i % 3}T10:00:00Z"} for i in range(n)]  # fmt: skip


def read(lake: Path, sql: str) -> list[tuple[object, ...]]:
    glob = str(lake / "events" / "**" / "*.parquet")
    return duckdb.sql(sql.replace("EVENTS", f"read_parquet('{glob}', hive_partitioning=true)")
                      ).fetchall()  # fmt: skip


def test_export_is_readable_idempotent_and_incremental(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with seamline.open(tmp_path / "a") as ws:
        ws.add_source("app", "mobile")
        ws.import_events("app", events("m", 30))
        first = ws.lake_export(lake)
        files = sorted(p.relative_to(lake) for p in lake.rglob("*.parquet"))
        again = ws.lake_export(lake)
        assert sorted(p.relative_to(lake) for p in lake.rglob("*.parquet")) == files
        assert first["events_written"] == again["events_written"] == 30
        assert read(lake, "SELECT count(*), count(DISTINCT event_date), count(DISTINCT person_id),"
                          " any_value(source) FROM EVENTS") == [(30, 3, 4, "app")]  # fmt: skip
        ws.import_events("app", events("n", 3, day=5))
        incremental = ws.lake_export(lake, incremental=True)
        assert incremental["dates"] == ["2026-11-05", "2026-11-06", "2026-11-07"]
        assert read(lake, "SELECT count(*) FROM EVENTS") == [(33,)]
        assert not list(lake.rglob("*.tmp"))


def test_two_collectors_publish_into_one_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for name, batch in (("a", events("m", 20)), ("b", events("m", 20)[10:] + events("x", 5))):
        with seamline.open(tmp_path / name) as ws:
            ws.add_source("app", "mobile")
            ws.import_events("app", batch)
            ws.lake_export(lake)
    collectors = read(lake, "SELECT count(DISTINCT collector) FROM EVENTS")
    assert collectors == [(2,)]
    # the same (source, messageId) reached both collectors: read it once
    assert read(lake, "SELECT count(*), count(DISTINCT (source, message_id)) FROM EVENTS") == [
        (35, 25)]  # fmt: skip


def test_cli_export_through_a_running_server(server: Server, tmp_path: Path) -> None:
    import httpx

    key = server.add_source("web", "web")
    batch = {"batch": events("s", 6)}
    assert httpx.post(server.url + "/v1/batch", json=batch, auth=(key, "")).status_code == 200
    lake = tmp_path / "lake"
    result = server.cli("lake", "export", str(lake))
    assert result["events_written"] == 6
    assert read(lake, "SELECT count(*) FROM EVENTS") == [(6,)]
    assert run_cli(server.data, "lake", "export", str(lake), check=False).returncode == 0
