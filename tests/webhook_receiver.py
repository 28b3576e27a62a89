"""A real webhook receiver on 127.0.0.1 for the moments tests and benchmark.

It verifies every request with the independent ``standardwebhooks`` package, records
it, deduplicates on ``webhook-id`` (as the Standard Webhooks spec tells receivers to) and
can misbehave on demand: answer an error status (with ``Retry-After``), hang until
released, or go down entirely (its port closed) and come back on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    path: str
    webhook_id: str | None
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str | None = None
    port: int = 0
    #: path prefix -> (status, extra headers); default 200
    answers: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    #: answer the first N requests of each webhook-id with 503 + Retry-After
    fail_first: int = 0
    retry_after: str | None = None
    hang: threading.Event | None = None  # when set: requests wait for it before answering
    on_request: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # the http.server API
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: the port is closed (connections are refused) until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- handling ----------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length)
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = False
        if self.secret and "webhook-signature" in headers:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        item = Received(request.path, headers.get("webhook-id"), headers, body, verified,
                        time.monotonic())  # fmt: skip
        with self._lock:
            self.received.append(item)
            seen = sum(1 for r in self.received if r.webhook_id and r.webhook_id == item.webhook_id)
        if self.on_request is not None:
            self.on_request(item)
        if self.hang is not None:
            self.hang.wait(30)
        status, extra = 200, {}
        for prefix, answer in self.answers.items():
            if request.path.startswith(prefix):
                status, extra = answer
        if item.webhook_id and seen <= self.fail_first:
            status = 503
            extra = {"Retry-After": self.retry_after} if self.retry_after else {}
        try:
            request.send_response(status)
            for name, value in extra.items():
                request.send_header(name, value)
            request.send_header("Content-Length", "0")
            request.end_headers()
        except OSError:
            pass  # the sender is gone (killed): nothing to answer

    # -- what arrived ------------------------------------------------------------------
    def for_path(self, prefix: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path.startswith(prefix)]

    def unique(self, prefix: str = "/") -> dict[str, Received]:
        """Deduplicated by webhook-id: what an idempotent receiver acts on."""
        out: dict[str, Received] = {}
        for r in self.for_path(prefix):
            out.setdefault(r.webhook_id or f"no-id-{id(r)}", r)
        return out

    def wait_for(self, prefix: str, count: int, timeout: float = 15) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_path(prefix)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        return self.for_path(prefix)
