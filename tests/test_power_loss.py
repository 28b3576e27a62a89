"""Power loss: the workspace on a FUSE file system that drops every unsynced write.

``tests/powerfs.py`` keeps what the server writes in memory until it is fsynced; a
"power cut" drops all of it at once and fails every later operation, so the backing
directory holds exactly what had been fsynced when the power went. Unlike ``kill -9``
(where the kernel still writes the page cache out), this catches an acknowledgement
that came before its fsync, and a file seamline needs that was never synced.

Under load (batches of 1-100 at about 400 events/s, retried until ``200``), the power
is cut CUTS times at random moments, each fsync taking 20 ms so that cuts often land
mid-commit; DuckDB's checkpoint threshold is 256 KB so some land in checkpoints. After
each cut: the server is killed, the durable image alone is checked (it holds every
event acknowledged before the cut), the file system is mounted again and the server
restarted on it. At the end every acknowledged event is stored exactly once.

Skipped only where ``/dev/fuse`` is missing. Knobs: ``SEAMLINE_POWER_CUTS`` (5),
``SEAMLINE_POWER_EVENTS`` (5000), ``SEAMLINE_POWER_SEED``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import ARTIFACTS, Server
from tests.loadgen import DATABASE_FILE, Sender, read_store

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/dev/fuse").exists(),
                       reason="/dev/fuse is missing: no FUSE here to simulate a power cut"),
]  # fmt: skip

CUTS = int(os.environ.get("SEAMLINE_POWER_CUTS", "5"))
EVENTS = int(os.environ.get("SEAMLINE_POWER_EVENTS", "5000"))
SEED = int(os.environ.get("SEAMLINE_POWER_SEED", "20261124"))
RATE = 400.0
FSYNC_MS = 20
CHECKPOINT_THRESHOLD = "256KB"


class PowerMount:
    """``tests/powerfs.py`` mounted at ``mountpoint`` over ``backing``."""

    def __init__(self, root: Path, fsync_ms: int = 0):
        self.backing = root / "disk"
        self.mountpoint = root / "mnt"
        self.status = root / "powerfs-status.json"
        self.log = root / "powerfs.log"
        self.fsync_ms = fsync_ms
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def mount(self) -> PowerMount:
        assert shutil.which("fusermount3"), "fusermount3 is missing: apt-get install fuse3"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.powerfs", str(self.backing), str(self.mountpoint),
                 str(self.status), str(self.fsync_ms)],
                stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.mounted():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"powerfs did not mount:\n{self.log.read_text()}")
            time.sleep(0.02)
        return self

    def cut(self) -> dict[str, object]:
        """Drop every unsynced write now; later operations on the mount fail."""
        self.status.unlink(missing_ok=True)
        with pytest.raises(OSError) as failed:
            os.close(os.open(self.mountpoint / ".powerfs-cut", os.O_CREAT | os.O_WRONLY))
        assert failed.value.errno == errno.EIO
        report: dict[str, object] = json.loads(self.status.read_text())
        return report

    def mounted(self) -> bool:
        # not os.path.ismount: after a cut even the root's lstat fails
        target = str(self.mountpoint.resolve())
        with open("/proc/self/mounts") as mounts:
            return any(line.split()[1] == target for line in mounts)

    def unmount(self) -> None:
        if self.mounted():
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                                  capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:  # still busy: detach it anyway
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=True)
        if self.proc is not None:
            try:  # a cut file system holds nothing more to write: no need to wait long
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


def test_power_cut_keeps_exactly_what_was_fsynced(tmp_path: Path) -> None:
    """The tool itself: unsynced writes, extensions and truncations are dropped."""
    disk = PowerMount(tmp_path).mount()
    try:
        path = disk.mountpoint / "file"
        fd = os.open(path, os.O_CREAT | os.O_RDWR)
        os.write(fd, b"a" * 10_000)
        os.fsync(fd)
        os.pwrite(fd, b"b" * 100, 5_000)  # overwrite in place
        os.write(fd, b"c" * 5_000)  # extend
        assert os.fstat(fd).st_size == 15_000
        assert os.pread(fd, 6, 4_998) == b"aabbbb"
        other = os.open(disk.mountpoint / "other", os.O_CREAT | os.O_RDWR)
        os.write(other, b"x" * 3_000)
        os.fsync(other)
        os.ftruncate(other, 1_000)  # a truncation not synced either
        report = disk.cut()
        with pytest.raises(OSError):
            os.pread(fd, 10, 0)
        for handle in (fd, other):  # closed, though the flush on close fails too
            with contextlib.suppress(OSError):
                os.close(handle)
    finally:
        disk.unmount()
    assert (disk.backing / "file").read_bytes() == b"a" * 10_000
    assert (disk.backing / "other").read_bytes() == b"x" * 3_000
    assert report["dropped_files"] == ["/file", "/other"]
    assert report["synced_bytes"] == 13_000


def _stored_ids(backing: Path) -> set[str]:
    """What a restart would find: the durable image, opened read-only (WAL replayed)."""
    con = duckdb.connect(str(backing / DATABASE_FILE), read_only=True)
    try:
        return {row[0] for row in con.execute("SELECT message_id FROM events").fetchall()}
    finally:
        con.close()


def test_power_cuts_under_load_lose_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    disk = PowerMount(tmp_path, fsync_ms=FSYNC_MS).mount()
    server = Server(disk.mountpoint, env={"SEAMLINE_CHECKPOINT_THRESHOLD": CHECKPOINT_THRESHOLD})
    reports: list[dict[str, object]] = []
    restarts: list[float] = []
    lost_at_cut: list[int] = []
    acked_at_cut: list[int] = []
    sender: Sender | None = None
    started = time.monotonic()
    try:
        server.start()
        write_key = server.add_source("power-app", "mobile")
        sender = Sender(server.url, write_key, threads=4, sizes=(1, 100), max_events=EVENTS,
                        rate=RATE, seed=SEED).start()  # fmt: skip
        for cut in range(CUTS):
            ready = time.monotonic()
            due = (cut + 1) * EVENTS // (CUTS + 1)
            while len(sender.stats.acked_ids) < due and time.monotonic() < ready + 60:
                time.sleep(0.02)
            time.sleep(max(0.0, ready + rng.uniform(0.2, 1.0) - time.monotonic()))
            acked = sender.acked_snapshot()  # all of these were answered 200 before the cut
            reports.append(disk.cut())
            server.kill()
            disk.unmount()
            durable = _stored_ids(disk.backing)
            acked_at_cut.append(len(acked))
            lost_at_cut.append(len(acked - durable))
            power_on = time.monotonic()
            disk.mount()
            server.start()
            restarts.append(time.monotonic() - power_on)
        assert sender.finished.wait(180), "the senders did not finish their events"
        sender.stop()
    except BaseException:
        if sender is not None:
            sender.stop(abandon=True)
        raise
    finally:
        if server.proc is not None:
            server.stop()
        disk.unmount()
    elapsed = time.monotonic() - started
    stats = sender.stats
    stored = read_store(disk.backing)
    partial = stored.partial_batches(stats.batch_sizes)
    figures = {
        "power_cuts": CUTS,
        "events_target": EVENTS,
        "rate_events_per_s": RATE,
        "fsync_ms": FSYNC_MS,
        "checkpoint_threshold": CHECKPOINT_THRESHOLD,
        "seed": SEED,
        "seconds": round(elapsed, 1),
        "events_acked": len(stats.acked_ids),
        "events_stored": stored.rows,
        "acked_before_each_cut": acked_at_cut,
        "acked_lost_at_each_cut": lost_at_cut,
        "unsynced_bytes_dropped_at_each_cut": [r["dropped_bytes"] for r in reports],
        "files_with_unsynced_data_at_each_cut": [r["dropped_files"] for r in reports],
        "events_lost": len(stats.acked_ids - stored.ids),
        "duplicates": stored.rows - stored.distinct_ids,
        "partial_batches": len(partial),
        "batches_resent": len(stats.resent_batches),
        "power_on_to_healthy_s_p50": round(statistics.median(restarts), 2),
        "power_on_to_healthy_s_max": round(max(restarts), 2),
        "answers": dict(stats.statuses),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "power_loss.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("power loss:", json.dumps(figures))

    assert not stats.unexpected, stats.unexpected[:5]
    assert lost_at_cut == [0] * CUTS, f"acknowledged events missing after a cut: {lost_at_cut}"
    assert stats.acked_ids <= stored.ids, "acknowledged events lost"
    assert stored.rows == stored.distinct_ids, "duplicate (source, messageId) rows"
    assert not partial, f"{len(partial)} batches stored in part, e.g. {partial[:5]}"
    assert len(stats.acked_ids) == EVENTS
    assert stored.ids == stats.acked_ids
    assert stats.sent_batches == set(stats.acked_attempt), "a batch was left unacknowledged"
    assert any(r["dropped_bytes"] for r in reports), "no cut dropped anything: proved nothing"
