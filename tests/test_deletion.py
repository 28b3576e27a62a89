"""Deletion is honest (reliability-and-security.md §4.5, §6.10).

- ``forget`` removes the person from every query at once, and later events carrying
  their identifiers are answered 200 and dropped (suppression);
- **but the bytes stay in the file** until it is rewritten: with compression off (so a
  byte search means something: FSST hides plaintext otherwise), the forgotten email is
  still in ``seamline.duckdb`` after ``forget`` and a checkpoint;
- ``seamline compact`` rewrites the file: the email is gone from the ``.duckdb`` and
  ``.wal`` bytes, while a person who was not forgotten is still there (the control);
- ``seamline compact`` refuses while a server owns the workspace, and a compacted
  workspace serves as before (same counts, dedup still works).

Figures go to stdout and ``tests/artifacts/deletion.json``.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx

import seamline
from seamline.store.compact import compact
from tests.conftest import ARTIFACTS, Server, run_cli

FIGURES: dict[str, Any] = {}


def _record(name: str, value: Any) -> None:
    FIGURES[name] = value
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "deletion.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
    print(f"deletion {name}:", json.dumps(value))


def _in_files(data: Path, needle: str) -> dict[str, bool]:
    found = {}
    for name in ("seamline.duckdb", "seamline.duckdb.wal"):
        path = data / name
        found[name] = path.exists() and needle.encode() in path.read_bytes()
    return found


def _person_events(name: str, email: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "identify", "userId": name, "traits": {"email": email, "note": email},
         "messageId": f"{name}-id", "timestamp": "2026-11-20T10:00:00Z"},
    ]  # fmt: skip
    events += [
        {"type": "track", "event": "Viewed", "userId": name, "messageId": f"{name}-{n}",
         "properties": {"contact": email}, "context": {"traits": {"email": email}},
         "timestamp": "2026-11-20T10:05:00Z"}
        for n in range(count)
    ]  # fmt: skip
    return events


def test_forgotten_bytes_leave_the_file_only_after_compact(tmp_path: Path) -> None:
    data = tmp_path / "workspace"
    gone = f"forget-me-{secrets.token_hex(6)}@example.com"
    kept = f"keep-me-{secrets.token_hex(6)}@example.com"
    with seamline.open(data) as ws:
        # Compression off for the whole database, so the byte search below is meaningful.
        ws.store.query("SET force_compression = 'uncompressed'")
        ws.add_source("crm", "server")
        ws.import_events("crm", _person_events("u-gone", gone, 300))
        ws.import_events("crm", _person_events("u-kept", kept, 300))
        # a failed event that mentions the person too
        ws.import_events("crm", [{"type": "track", "userId": "u-gone",
                                  "properties": {"email": gone}}])  # fmt: skip
    before = _in_files(data, gone)
    assert any(before.values()), "the email is not in the file at all: the test proves nothing"

    with seamline.open(data) as ws:
        ws.store.query("SET force_compression = 'uncompressed'")
        forgotten = ws.forget(gone)
        assert ws.store.query("SELECT count(*) FROM events WHERE user_id = 'u-gone'") == [(0,)]
        assert ws.store.query(
            "SELECT count(*) FROM failed_events WHERE contains(raw, ?)", [gone]
        ) == [(0,)]
        # later events for the person are dropped at the door
        result = ws.import_events("crm", _person_events("u-gone-again", gone, 2))
        assert result["suppressed"] == 3 and result["stored"] == 0, result
    after_forget = _in_files(data, gone)

    compacted = compact(data, force_compression="uncompressed")
    after_compact = _in_files(data, gone)
    control = _in_files(data, kept)
    with seamline.open(data) as ws:  # the compacted workspace opens and answers
        stats = ws.stats()
        person = ws.person(kept)
    _record("bytes", {
        "deleted_events": forgotten["deleted"]["events"],
        "email_in_file_before_forget": before,
        "email_in_file_after_forget_and_checkpoint": after_forget,
        "email_in_file_after_compact": after_compact,
        "control_email_in_file_after_compact": control,
        "compact": compacted,
    })  # fmt: skip
    assert forgotten["deleted"]["events"] == 301
    # DuckDB keeps deleted bytes until the file is rewritten: this is what the README says.
    assert any(after_forget.values()), "deleted bytes vanished without a rewrite"
    assert not any(after_compact.values()), f"{gone} is still in the file after compact"
    assert control["seamline.duckdb"], "the control person vanished: compaction lost data"
    assert stats["events"] == 301 and person["event_count"] == 301


def test_compact_refuses_while_served_and_the_result_serves(tmp_path: Path) -> None:
    data = tmp_path / "workspace"
    server = Server(data).start()
    try:
        key = server.add_source("app", "mobile")
        token = server.admin_token()
        batch = {"batch": [{"type": "track", "event": "E", "userId": f"u-{n % 7}",
                            "messageId": f"m-{n}"} for n in range(500)]}  # fmt: skip
        assert httpx.post(server.url + "/v1/batch", json=batch, auth=(key, "")).status_code == 200
        server.cli("forget", "u-3", "--yes")
        refused = run_cli(data, "compact", check=False)
        assert refused.returncode == 1
        assert "stop the server" in refused.stderr.lower(), refused.stderr
        assert "Traceback" not in refused.stderr
        stats_before = httpx.get(server.url + "/api/stats",
                                 headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
        server.stop()
        result = run_cli(data, "compact")
        assert result["rows"] > 0 and result["bytes_after"] > 0
        server.start()
        headers = {"Authorization": f"Bearer {token}"}  # tokens survive compaction
        stats_after = httpx.get(server.url + "/api/stats", headers=headers).json()
        # the writer's profile is the process's: the 500 events before, nothing yet after
        assert stats_before.pop("writer")["events"] == 500
        assert stats_after.pop("writer")["events"] == 0
        assert stats_after == stats_before
        # dedup (the primary key) survived: the same batch stores nothing new
        assert httpx.post(server.url + "/v1/batch", json=batch, auth=(key, "")).status_code == 200
        again = httpx.get(server.url + "/api/stats", headers=headers).json()
        assert again["events"] == stats_before["events"]
        # suppression survived: u-3's identifiers are still dropped
        assert again["dropped_suppressed"] >= stats_before["dropped_suppressed"] + 71
    finally:
        if server.proc is not None:
            server.stop()
    _record("cli", {"refused_while_served": True, "compact": result,
                    "events": stats_before["events"]})  # fmt: skip
