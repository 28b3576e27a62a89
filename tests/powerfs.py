"""A FUSE passthrough file system that can cut the power (test-only).

``python -m tests.powerfs BACKING MOUNTPOINT STATUS_FILE [FSYNC_MS]`` mounts ``BACKING``
at ``MOUNTPOINT``. What a process writes is kept in this daemon's memory, page by page,
and reaches ``BACKING`` only when the file is fsynced (``fsync``/``fdatasync``), the
way a disk's volatile cache and the page cache hold data until a flush. Truncating and
extending are buffered the same way. Name operations (create, rename, unlink, mkdir)
reach ``BACKING`` at once: seamline's durability rests on fsynced data, and metadata
journals commit names on their own. ``FSYNC_MS`` makes every fsync take that long
before it writes anything, like a disk flushing its cache, so that a cut often lands
while a commit's fsync is under way.

**Cutting the power**: creating the file ``.powerfs-cut`` at the root drops every
unsynced write at once, writes what was dropped to ``STATUS_FILE`` (JSON) and makes
every later operation fail with ``EIO``. ``BACKING`` then holds exactly what had been
fsynced; kill the processes that used the mount, unmount it, and mount ``BACKING``
again to "power on".
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mfusepy as fuse

PAGE = 4096
CUT_NAME = "/.powerfs-cut"


class _File:
    """One file's unsynced state over its backing file."""

    __slots__ = ("fd", "pages", "size", "zero_from")

    def __init__(self, fd: int):
        self.fd = fd
        self.pages: dict[int, bytearray] = {}  # page number -> its unsynced content
        self.size = os.fstat(fd).st_size  # the size a reader sees now
        self.zero_from: int | None = None  # backing bytes from here were truncated away

    def dirty_bytes(self) -> int:
        """Unsynced bytes: changed pages, and a size change counts as its difference."""
        return len(self.pages) * PAGE + abs(self.size - os.fstat(self.fd).st_size)

    def _backing(self, offset: int, length: int) -> bytearray:
        data = bytearray(os.pread(self.fd, length, offset))
        data.extend(bytes(length - len(data)))
        if self.zero_from is not None and self.zero_from < offset + length:
            start = max(0, self.zero_from - offset)
            data[start:] = bytes(length - start)
        return data

    def read(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        data = self._backing(offset, end - offset)
        if self.pages:
            for number in range(offset // PAGE, (end - 1) // PAGE + 1):
                page = self.pages.get(number)
                if page is None:
                    continue
                base = number * PAGE
                start, stop = max(offset, base), min(end, base + PAGE)
                data[start - offset:stop - offset] = page[start - base:stop - base]
        return bytes(data)

    def write(self, data: bytes, offset: int) -> int:
        end = offset + len(data)
        position = offset
        while position < end:
            number, within = divmod(position, PAGE)
            count = min(PAGE - within, end - position)
            page = self.pages.get(number)
            if page is None:
                page = (bytearray(PAGE) if count == PAGE
                        else self._backing(number * PAGE, PAGE))  # fmt: skip
                if number * PAGE >= self.size:
                    page[:] = bytes(PAGE)
                elif (number + 1) * PAGE > self.size:  # past the end reads as zeros
                    page[self.size - number * PAGE:] = bytes((number + 1) * PAGE - self.size)
                self.pages[number] = page
            page[within:within + count] = data[position - offset:position - offset + count]
            position += count
        self.size = max(self.size, end)
        return len(data)

    def truncate(self, length: int) -> None:
        if length < self.size:
            self.zero_from = length if self.zero_from is None else min(self.zero_from, length)
            last = length // PAGE
            for number in [n for n in self.pages if n > last or n * PAGE >= length]:
                del self.pages[number]
            page = self.pages.get(last)
            if page is not None:
                page[length - last * PAGE:] = bytes((last + 1) * PAGE - length)
        self.size = length

    def sync(self) -> int:
        """Write the unsynced state to the backing file; returns the bytes written."""
        written = 0
        if self.zero_from is not None:
            os.ftruncate(self.fd, self.zero_from)
            self.zero_from = None
        for number in sorted(self.pages):
            start = number * PAGE
            if start >= self.size:
                continue
            chunk = self.pages[number][: min(PAGE, self.size - start)]
            os.pwrite(self.fd, chunk, start)
            written += len(chunk)
        os.ftruncate(self.fd, self.size)
        self.pages.clear()
        return written


class PowerCutFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing: Path, status_file: Path, fsync_seconds: float = 0.0):
        self.backing = backing
        self.status_file = status_file
        self.fsync_seconds = fsync_seconds
        self._mutex = threading.Lock()
        self.files: dict[str, _File] = {}
        self.dead = False
        self.syncs = 0
        self.synced_bytes = 0

    # -- helpers ----------------------------------------------------------------------
    def _path(self, path: str) -> str:
        return str(self.backing) + path

    def _alive(self) -> None:
        if self.dead:
            raise fuse.FuseOSError(errno.EIO)

    def _file(self, path: str) -> _File:
        state = self.files.get(path)
        if state is None:
            state = self.files[path] = _File(os.open(self._path(path), os.O_RDWR))
        return state

    def _forget(self, path: str) -> None:
        state = self.files.pop(path, None)
        if state is not None:
            os.close(state.fd)

    def _cut(self) -> None:
        dropped = {path: state.dirty_bytes() for path, state in self.files.items()}
        for path in list(self.files):
            self._forget(path)
        self.dead = True
        report = {
            "dropped_bytes": sum(dropped.values()),
            "dropped_files": sorted(path for path, size in dropped.items() if size),
            "syncs": self.syncs,
            "synced_bytes": self.synced_bytes,
        }
        self.status_file.write_text(json.dumps(report))

    # -- name operations (durable at once) -------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            self._alive()
            st = os.lstat(self._path(path))
            attrs = {key: getattr(st, key) for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")}  # fmt: skip
            attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns,
                         st_ctime=st.st_ctime_ns)  # fmt: skip
            state = self.files.get(path)
            if state is not None:
                attrs["st_size"] = state.size
            return attrs

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._mutex:
            self._alive()
            return [".", "..", *os.listdir(self._path(path))]

    def access(self, path: str, amode: int) -> int:
        with self._mutex:
            self._alive()
            if not os.access(self._path(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            self._alive()
            os.mkdir(self._path(path), mode)
            return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            self._alive()
            os.rmdir(self._path(path))
            return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._alive()
            self._forget(path)
            os.unlink(self._path(path))
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._alive()
            self._forget(new)
            os.rename(self._path(old), self._path(new))
            state = self.files.pop(old, None)
            if state is not None:
                self.files[new] = state
            return 0

    def chmod(self, path: str, mode: int) -> int:
        with self._mutex:
            self._alive()
            os.chmod(self._path(path), mode)
            return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        with self._mutex:
            self._alive()
            os.chown(self._path(path), uid, gid)
            return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        with self._mutex:
            self._alive()
            os.utime(self._path(path), ns=times)
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        with self._mutex:
            self._alive()
            st = os.statvfs(self._path(path))
            return {key: getattr(st, key) for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")}  # fmt: skip

    # -- data (buffered until fsync) -------------------------------------------------------
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        with self._mutex:
            self._alive()
            if path == CUT_NAME:
                self._cut()
                raise fuse.FuseOSError(errno.EIO)
            existed = os.path.exists(self._path(path))
            os.close(os.open(self._path(path), os.O_WRONLY | os.O_CREAT | (flags & os.O_EXCL),
                             mode))  # fmt: skip
            if existed and flags & os.O_TRUNC:
                self._file(path).truncate(0)
            return 0

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            self._alive()
            if flags & os.O_TRUNC:
                self._file(path).truncate(0)
            return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            self._alive()
            return self._file(path).read(size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            self._alive()
            return self._file(path).write(data, offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._mutex:
            self._alive()
            self._file(path).truncate(length)
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        if self.fsync_seconds:  # the flush takes time; a cut meanwhile drops the data
            time.sleep(self.fsync_seconds)
        with self._mutex:
            self._alive()
            state = self.files.get(path)
            if state is not None:
                self.synced_bytes += state.sync()
            self.syncs += 1
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._alive()
            return 0

    def flush(self, path: str, fh: int) -> int:
        with self._mutex:
            self._alive()
            return 0

    def release(self, path: str, fh: int) -> int:
        return 0


def main() -> None:
    backing, mountpoint, status_file = (Path(arg) for arg in sys.argv[1:4])
    fsync_seconds = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0
    operations = PowerCutFS(backing.resolve(), status_file, fsync_seconds)
    fuse.FUSE(operations, str(mountpoint), foreground=True,
              attr_timeout=0, entry_timeout=0, negative_timeout=0)  # fmt: skip


if __name__ == "__main__":
    main()
