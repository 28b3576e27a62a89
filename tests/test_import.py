"""`seamline import`: files through the same validation and dedupe, with a summary."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import seamline
from tests.conftest import Server, run_cli


def _events(n: int, prefix: str = "m") -> list[dict[str, object]]:
    return [
        {"type": "track", "event": "Order Completed", "userId": f"u{i % 7}",
         "messageId": f"{prefix}{i}", "timestamp": f"2025-03-0{1 + i % 9}T10:00:00Z",
         "properties": {"total": i}}
        for i in range(n)
    ]  # fmt: skip


def test_import_formats_keep_timestamps_and_dedupe(data_dir: Path, tmp_path: Path) -> None:
    run_cli(data_dir, "sources", "add", "backfill", "--channel", "server")
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(e) for e in _events(50, "j")) + "\nnot json\n\n")
    batch = tmp_path / "export.json.gz"
    with gzip.open(batch, "wt") as handle:
        json.dump({"batch": _events(30, "b"), "context": {"library": {"name": "export"}}}, handle)
    csv_path = tmp_path / "calls.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["type", "event", "user_id", "message_id", "timestamp",
                         "properties.reason", "context"])  # fmt: skip
        for i in range(20):
            writer.writerow(["track", "Call Started", f"u{i}", f"c{i}", "2025-03-01T09:00:00Z",
                             "card", '{"channel": "call_center"}'])  # fmt: skip
        writer.writerow(["track", "", "u1", "c-bad", "2025-03-01T09:00:00Z", "", ""])
    parquet = tmp_path / "events.parquet"
    rows = _events(40, "p")
    pq.write_table(pa.Table.from_pylist([{**e, "properties": json.dumps(e["properties"])}
                                         for e in rows]), parquet)  # fmt: skip

    summary = run_cli(data_dir, "import", str(jsonl), str(batch), str(csv_path), str(parquet),
                      "--source", "backfill")  # fmt: skip
    assert summary["stored"] == 50 + 30 + 20 + 40
    assert summary["failed"] == 1 and summary["reasons"] == {"missing_event": 1}
    assert summary["unreadable"] == 1 and "line 51" in summary["unreadable_examples"][0]

    again = run_cli(data_dir, "import", str(jsonl), "--source", "backfill")
    assert again["stored"] == 0 and again["duplicates"] == 50

    with seamline.open(data_dir) as ws:
        first = ws.store.query_one("SELECT timestamp, channel FROM events WHERE message_id = 'j0'")
        assert first is not None and first[0].isoformat() == "2025-03-01T10:00:00"
        call = ws.store.query_one(
            "SELECT channel, properties->>'reason' FROM events WHERE message_id = 'c3'"
        )
        assert call == ("call_center", "card")
        library = ws.store.query_one("SELECT library_name FROM events WHERE message_id = 'b1'")
        assert library == ("export",)
        assert ws.stats()["events"] == 140


def test_import_goes_through_a_running_server(server: Server, tmp_path: Path) -> None:
    server.add_source("backfill", "server")
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(json.dumps(e) for e in _events(25)))
    summary = server.cli("import", str(path), "--source", "backfill")
    assert summary["stored"] == 25
    assert server.cli("stats")["events"] == 25


def test_import_errors_are_one_clear_line(data_dir: Path, tmp_path: Path) -> None:
    run_cli(data_dir, "sources", "add", "backfill", "--channel", "server")
    path = tmp_path / "events.jsonl"
    path.write_text("{}")
    result = run_cli(data_dir, "import", str(path), "--source", "backfil", check=False)
    assert result.returncode == 1
    assert "No source named 'backfil'" in result.stderr
    assert "Did you mean 'backfill'" in result.stderr
    assert "Traceback" not in result.stderr
    odd = tmp_path / "events.xml"
    odd.write_text("<x/>")
    result = run_cli(data_dir, "import", str(odd), "--source", "backfill", check=False)
    assert result.returncode == 1 and ".jsonl" in result.stderr
