"""Shared fixtures: a real `seamline serve` process on 127.0.0.1 over a real DuckDB file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(data: Path, *args: str, as_json: bool = True, check: bool = True,
            env: dict[str, str] | None = None) -> Any:  # fmt: skip
    """Run the real `seamline` CLI; returns parsed JSON (or the CompletedProcess)."""
    command = [sys.executable, "-m", "seamline", "--data", str(data)]
    if as_json:
        command.append("--json")
    result = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if not check:
        return result
    assert result.returncode == 0, f"seamline {' '.join(args)} failed: {result.stderr}"
    return json.loads(result.stdout) if as_json else result


class ServerExited(RuntimeError):
    """The server process ended before it answered its health check."""

    def __init__(self, code: int, log: str):
        super().__init__(f"server exited early with code {code}:\n{log}")
        self.code = code  # negative: killed by that signal
        self.log = log  # what this start wrote


@dataclass
class Server:
    """A `seamline serve` child process; restartable, killable."""

    data: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        self.log_path = self.data.parent / f"serve-{self.port}.log"
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            offset = log.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "seamline", "--data", str(self.data), "serve",
                 "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self.proc.poll()) is not None:
                self.proc = None
                written = self.log_path.read_bytes()[offset:]
                raise ServerExited(code, written.decode(errors="replace"))
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cli(self, *args: str) -> Any:
        return run_cli(self.data, *args)

    def add_source(self, name: str, channel: str = "mobile", unit: str | None = None) -> str:
        extra = ["--unit", unit] if unit else []
        return str(self.cli("sources", "add", name, "--channel", channel, *extra)["write_key"])

    def admin_token(self) -> str:
        return str(self.cli("tokens", "add", "tests", "--scope", "admin")["token"])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    srv = Server(data_dir).start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
def write_key(server: Server) -> str:
    return server.add_source("ios-app", "mobile", "retail")
