"""Storage faults against a real server (reliability-and-security.md §6.4).

The workspace lives on a small tmpfs mounted for the test. Cases:

- **disk full**: a filler file takes every free byte while events keep coming. Every
  answer must be ``503`` with ``Retry-After`` (never a ``400``, never another 5xx, and a
  ``200`` only for an event that is then really stored), the log says why in one line,
  and the server stays up. Once the filler is deleted, ingest answers ``200`` again
  without a restart, and every acknowledged event is in the file.
- **checkpoint on a full disk**: DuckDB's automatic checkpoint fails and *invalidates*
  the database; the writer answers 503 and reopens it by itself once there is room.
- **read-only**: the kernel turns the file system read-only under the running server
  (ext4 ``errors=remount-ro``); 503 while it lasts, and after the operator's remount a
  restart has every acknowledged event.

Needs root (``mount``, loop devices); every mount is undone in a ``finally``. Figures go
to stdout and ``tests/artifacts/disk_faults.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, Server
from tests.loadgen import DATABASE_FILE, make_batch, read_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)"),
]

TMPFS_MB = 48
CHECKPOINT_THRESHOLD = "16MB"  # DuckDB's own default; seamline's (256MB) would fill the disk
WAL_BEFORE_FILL = 13 << 20  # DuckDB checkpoints automatically at 16 MB of WAL
GAP_BYTES = 4 << 20  # room left for the WAL to cross that threshold, not for the checkpoint
RECOVER_WITHIN_SECONDS = 15.0
FIGURES: dict[str, Any] = {}


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr.strip()}"


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        # lazy: a server that is still running (test failure) must not leave it mounted
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory: Path, leave: int = 0) -> Path:
    """Write a filler file until the file system is full (ENOSPC), or has ``leave`` bytes."""
    filler = directory / "filler.bin"
    chunk = b"\0" * (1 << 20)
    if leave:
        stat = os.statvfs(directory)
        with filler.open("wb") as handle:
            handle.write(b"\0" * (stat.f_bavail * stat.f_frsize - leave))
        return filler
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError:
            pass
        try:  # the last few pages, byte-block by byte-block
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    stat = os.statvfs(directory)
    assert stat.f_bavail * stat.f_frsize < 8192, "the file system did not fill up"
    return filler


@dataclass
class Answers:
    """Every ingest answer of a phase, and the ids of the acknowledged events."""

    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    retry_after: set[str | None] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)  # ids of batches answered 503
    bad: list[str] = field(default_factory=list)  # anything but 200 or a proper 503
    reads: Counter[str] = field(default_factory=Counter)  # answers of /api/stats meanwhile

    def post(self, client: httpx.Client, url: str, batch_id: str, size: int = 20,
             events: list[dict[str, Any]] | None = None) -> int:  # fmt: skip
        events = events or make_batch(batch_id, size)
        ids = {event["messageId"] for event in events}
        try:
            response = client.post(url + "/v1/batch", json={"batch": events})
        except httpx.TransportError as exc:
            self.statuses[type(exc).__name__] += 1
            self.bad.append(f"{batch_id}: {type(exc).__name__}")
            return 0
        self.statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            self.acked |= ids
        elif response.status_code == 503:
            self.refused |= ids
            self.retry_after.add(response.headers.get("retry-after"))
            body = response.json()
            self.codes[str(body.get("code"))] += 1
            if not (isinstance(body.get("message"), str) and body["message"]):
                self.bad.append(f"{batch_id}: 503 without the error envelope: {body}")
        else:
            self.bad.append(f"{batch_id}: {response.status_code} {response.text[:200]}")
        return response.status_code

    def to_dict(self) -> dict[str, Any]:
        return {"answers": dict(self.statuses), "codes_503": dict(self.codes),
                "retry_after": sorted(str(v) for v in self.retry_after),
                "events_acked": len(self.acked), "reads": dict(self.reads)}  # fmt: skip


def _health(server: Server) -> dict[str, Any]:
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    answer = httpx.get(server.url + "/api/health", timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _recover(client: httpx.Client, server: Server, answers: Answers, prefix: str) -> float:
    """Seconds until ingest answers 200 again (no restart)."""
    started = time.monotonic()
    number = 0
    while time.monotonic() - started < RECOVER_WITHIN_SECONDS:
        if answers.post(client, server.url, f"{prefix}-{number}") == 200:
            return time.monotonic() - started
        number += 1
        time.sleep(0.2)
    pytest.fail(f"ingest did not recover within {RECOVER_WITHIN_SECONDS} s:\n"
                f"{server.log()[-3000:]}")  # fmt: skip


def _reads_recover(server: Server, token: str) -> float:
    """Seconds until /api/stats answers 200 again, with no ingest meanwhile."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVER_WITHIN_SECONDS:
        answer = httpx.get(server.url + "/api/stats", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert answer.status_code in (200, 503), answer.text[:300]
        if answer.status_code == 200:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"reads did not recover within {RECOVER_WITHIN_SECONDS} s")


def _fault_phase(client: httpx.Client, server: Server, answers: Answers, prefix: str,
                 requests: int, token: str | None = None) -> None:  # fmt: skip
    """Posts while the fault lasts: from one thread and from four at once."""
    for number in range(requests // 2):
        answers.post(client, server.url, f"{prefix}-s{number}")

    def burst(thread: int) -> None:
        for number in range(requests // 8):
            answers.post(client, server.url, f"{prefix}-t{thread}-{number}")

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Health keeps answering; reads answer 200 or a retryable 503, never a 500.
    _health(server)
    if token:
        for _ in range(5):
            read = httpx.get(server.url + "/api/stats", timeout=30,
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            answers.reads[str(read.status_code)] += 1
            if read.status_code not in (200, 503):
                answers.bad.append(f"read /api/stats: {read.status_code} {read.text[:200]}")


def _check_phase(name: str, fault: Answers, after: Answers, log: str, needle: str) -> None:
    assert not fault.bad, fault.bad[:5]
    assert not after.bad, after.bad[:5]
    assert set(fault.statuses) <= {"200", "503"}, fault.statuses
    assert fault.statuses["503"] > 0, f"{name}: the fault never reached the answers"
    assert all(v and v.isdigit() for v in fault.retry_after), fault.retry_after
    assert set(fault.codes) <= {"store_unavailable", "overloaded"}, fault.codes
    assert needle in log, f"{name}: no clear log line naming the cause ({needle!r})"


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    # The workspace directory itself is the mount point, so the server's log (written
    # next to it by the Server fixture) stays on the real disk.
    with tmpfs(tmp_path / "workspace", TMPFS_MB) as path:
        yield path


def test_disk_full_answers_503_and_recovers_without_restart(mounted: Path) -> None:
    server = Server(mounted, env={"SEAMLINE_RETRY_AFTER_SECONDS": "2"}).start()
    pid = server.proc.pid if server.proc else None
    filler: Path | None = None
    before, fault, after = Answers(), Answers(), Answers()
    try:
        key = server.add_source("disk-app", "server")
        token = server.admin_token()
        with httpx.Client(auth=(key, ""), timeout=30) as client:
            for number in range(10):
                assert before.post(client, server.url, f"before-{number}") == 200
            filler = fill(mounted)
            started = time.monotonic()
            _fault_phase(client, server, fault, "full", 120, token)
            fault_seconds = time.monotonic() - started
            filler.unlink()
            filler = None
            recovered = _recover(client, server, after, "recover")
            for number in range(20):
                assert after.post(client, server.url, f"after-{number}") == 200
        assert server.proc is not None and server.proc.pid == pid, "the server was restarted"
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        if server.proc is not None:
            server.stop()
    log = server.log()
    stored = read_store(mounted)
    acked = before.acked | fault.acked | after.acked
    missing = acked - stored.ids
    FIGURES["disk_full"] = {
        "tmpfs_mb": TMPFS_MB,
        "fault": fault.to_dict(),
        "fault_seconds": round(fault_seconds, 2),
        "recovered_after_s": round(recovered, 2),
        "events_acked": len(acked),
        "events_stored": stored.rows,
        "events_lost": len(missing),
        "restarts": 0,
        "database_reopened": "reopened the database" in log,
    }
    _check_phase("disk full", fault, after, log, "No space left on device")
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert stored.rows == stored.distinct_ids
    assert not fault.refused & stored.ids - fault.acked - after.acked, "a 503 batch was stored"


def _big_batch(batch_id: str, size: int = 100) -> list[dict[str, Any]]:
    """Events of ~2 KB of random hex each, so the WAL grows fast and compresses badly."""
    events = make_batch(batch_id, size)
    for event in events:
        event["properties"]["pad"] = os.urandom(1000).hex()
    return events


def test_checkpoint_on_a_full_disk_invalidates_then_the_writer_reopens(mounted: Path) -> None:
    """DuckDB's automatic checkpoint (at 16 MB of WAL) fails on a full disk with a FATAL
    error that invalidates the database; every later statement fails. The writer must
    answer 503, reopen the database itself once the disk has room, and lose nothing."""
    server = Server(mounted, env={"SEAMLINE_CHECKPOINT_THRESHOLD": CHECKPOINT_THRESHOLD}).start()
    pid = server.proc.pid if server.proc else None
    wal = mounted / (DATABASE_FILE + ".wal")
    filler: Path | None = None
    before, fault, after = Answers(), Answers(), Answers()
    try:
        key = server.add_source("checkpoint-app", "server")
        token = server.admin_token()
        with httpx.Client(auth=(key, ""), timeout=60) as client:
            number = 0
            while not wal.exists() or wal.stat().st_size < WAL_BEFORE_FILL:
                assert number < 400, "the WAL did not grow"
                events = _big_batch(f"pre-{number}")
                assert before.post(client, server.url, f"pre-{number}", events=events) == 200
                number += 1
            wal_before = wal.stat().st_size
            filler = fill(mounted, leave=GAP_BYTES)
            started = time.monotonic()
            for number in range(60):  # the WAL crosses the threshold: checkpoint, ENOSPC
                fault.post(client, server.url, f"big-{number}", events=_big_batch(f"big-{number}"))
            _fault_phase(client, server, fault, "inv", 40, token)
            fault_seconds = time.monotonic() - started
            filler.unlink()
            filler = None
            # With no write coming in, the writer reopens the database by itself: reads
            # recover first.
            reads_back = _reads_recover(server, token)
            recovered = _recover(client, server, after, "recover")
            for number in range(20):
                assert after.post(client, server.url, f"after-{number}") == 200
            stats = httpx.get(server.url + "/api/health", timeout=10).json()
        assert server.proc is not None and server.proc.pid == pid, "the server was restarted"
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        if server.proc is not None:
            server.stop()
    log = server.log()
    stored = read_store(mounted)
    acked = before.acked | fault.acked | after.acked
    missing = acked - stored.ids
    FIGURES["checkpoint_on_full_disk"] = {
        "wal_bytes_before_fill": wal_before,
        "free_bytes_left": GAP_BYTES,
        "fault": fault.to_dict(),
        "fault_seconds": round(fault_seconds, 2),
        "invalidated": "database was invalidated" in log,
        "reopened_without_restart": "reopened the database" in log,
        "reads_back_after_s": round(reads_back, 2),
        "recovered_after_s": round(recovered, 2),
        "events_acked": len(acked),
        "events_stored": stored.rows,
        "events_lost": len(missing),
        "restarts": 0,
    }
    assert stats["ok"] is True
    _check_phase("checkpoint on a full disk", fault, after, log, "No space left on device")
    assert "database was invalidated" in log, "the fault did not invalidate the database"
    assert "reopened the database" in log
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert stored.rows == stored.distinct_ids


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB ext4 file system on a loop device, mounted with errors=remount-ro."""
    image = tmp_path / "ext4.img"
    with image.open("wb") as handle:
        handle.truncate(64 << 20)
    _run("mkfs.ext4", "-q", "-F", str(image))
    path = tmp_path / "workspace"
    path.mkdir()
    _run("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True, timeout=30)


def test_file_system_turned_read_only_answers_503_then_a_restart_recovers(ext4: Path) -> None:
    """The kernel remounts a file system read-only after an error (``errors=remount-ro``):
    ext4's ``trigger_fs_error`` does exactly that to a live mount. Writes then fail with
    EROFS until the operator remounts, which needs the server's files closed: the server
    answers 503 meanwhile, stays up, stops cleanly on SIGTERM, and after the remount a
    restart has every acknowledged event."""
    device = Path(subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(ext4)], text=True,
                                 capture_output=True, check=True).stdout.strip())  # fmt: skip
    trigger = Path("/sys/fs/ext4") / device.name / "trigger_fs_error"
    assert trigger.exists(), f"{trigger} is missing: the kernel cannot simulate the error"
    server = Server(ext4).start()
    before, fault, after = Answers(), Answers(), Answers()
    try:
        key = server.add_source("ro-app", "server")
        token = server.admin_token()
        with httpx.Client(auth=(key, ""), timeout=30) as client:
            for number in range(10):
                assert before.post(client, server.url, f"before-{number}") == 200
            trigger.write_text("1\n")
            with pytest.raises(OSError):
                (ext4 / "probe").write_bytes(b"x")
            _fault_phase(client, server, fault, "ro", 40, token)
        code = server.stop()
        log = server.log()
        # The operator's fix: unmount, repair, mount read-write again, start the server.
        image = ext4.parent / "ext4.img"
        _run("umount", str(ext4))
        subprocess.run(["e2fsck", "-p", "-f", str(image)], capture_output=True, timeout=60)
        _run("mount", "-o", "loop,errors=remount-ro", str(image), str(ext4))
        server.start()
        with httpx.Client(auth=(key, ""), timeout=30) as client:
            for number in range(20):
                assert after.post(client, server.url, f"after-{number}") == 200
    finally:
        if server.proc is not None:
            server.stop()
    stored = read_store(ext4)
    acked = before.acked | fault.acked | after.acked
    missing = acked - stored.ids
    FIGURES["read_only"] = {
        "how": "ext4 errors=remount-ro, trigger_fs_error on the live mount",
        "fault": fault.to_dict(),
        "sigterm_exit_code": code,
        "events_acked": len(acked),
        "events_stored": stored.rows,
        "events_lost": len(missing),
        "recovery": "remount read-write, then restart",
    }
    _check_phase("read-only", fault, after, log, "Read-only file system")
    assert code in (0, -15), f"the server did not stop cleanly: {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert stored.rows == stored.distinct_ids


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "disk_faults.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
        print("disk faults:", json.dumps(FIGURES))
