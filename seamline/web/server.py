"""The ASGI application and the ``serve`` loop.

While it runs, the server records its address and a per-run admin secret in
``<data dir>/server.json`` (mode 0600) so the CLI can go through it: DuckDB lets
only one process open the workspace file.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from seamline import __version__
from seamline.app import Workspace
from seamline.web.api import install_api
from seamline.web.collect_routes import CollectFastPath, install_collect_routes
from seamline.web.dashboard import install_dashboard
from seamline.web.errors import install_error_handlers

log = logging.getLogger("seamline.web")
SERVER_FILE = "server.json"


def create_app(workspace: Workspace, *, local_secret: str | None = None) -> FastAPI:
    app = FastAPI(
        title="Seamline",
        version=__version__,
        description="Segment-compatible collection and customer-journey analytics.",
        redirect_slashes=False,
        docs_url="/api/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    # the POST endpoints, which ``serve`` also reaches directly (CollectFastPath)
    app.state.collect_endpoints = install_collect_routes(app, workspace)
    install_api(app, workspace, local_secret)
    install_dashboard(app, workspace, local_secret)
    return app


def write_server_file(data_dir: Path, url: str, secret: str) -> Path:
    path = data_dir / SERVER_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "pid": os.getpid(), "token": secret}, handle)
    os.replace(tmp, path)
    return path


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8088,
          log_level: str = "info") -> None:  # fmt: skip
    """Serve until SIGINT/SIGTERM; then finish in-flight requests, drain and checkpoint."""
    secret = "sl_local_" + secrets.token_urlsafe(24)
    app = create_app(workspace, local_secret=secret)
    url_host = f"[{host}]" if ":" in host else host
    url = f"http://{url_host}:{port}"

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        server_file = write_server_file(workspace.data_dir, url, secret)
        log.info("Seamline %s serving %s on %s", __version__, workspace.data_dir, url)
        try:
            yield
        finally:
            # uvicorn has finished in-flight requests; drain the writer and checkpoint here,
            # because uvicorn re-raises SIGTERM once the lifespan has ended.
            workspace.close()
            try:
                server_file.unlink(missing_ok=True)
            except OSError as exc:  # a read-only or failing disk must not fail the stop
                log.warning("could not remove %s: %s", server_file, exc)
            log.info("Seamline stopped; every acknowledged event is committed.")

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(
        # a POST to a collection route skips the middleware stack and the router: it is
        # most of the requests, and they answer their own errors (collect_routes)
        CollectFastPath(app, app.state.collect_endpoints),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=workspace.settings.shutdown_timeout_seconds,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # bodies are decoded in worker processes, so this process's GIL is left to HTTP,
    # identity and the writer (seamline.collect.parsing)
    workspace.collector.start_parsers(workspace.settings.parse_processes,
                                      workspace.settings.parse_nice)
    app.state.live.should_stop = lambda: server.should_exit  # end live streams on SIGTERM
    # The writer thread gives up the GIL in every DuckDB call and then waits for the busy
    # event loop to hand it back: up to the switch interval (5 ms by default) per call, a
    # few calls per commit. 1 ms measured ~10% more durable events/s (bench/README.md).
    sys.setswitchinterval(0.001)
    # Ingest allocates a few hundred objects per event (parsed rows, Arrow input), so at
    # CPython's default threshold of 700 the cyclic GC ran every few events and traversed
    # the young objects each time. The objects of start-up (modules, the app) are frozen
    # out of collection and young collections run every 50,000 allocations: +11% durable
    # events/s in four alternated pairs (bench/README.md, seventh session).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        server.run()
    finally:
        workspace.close()  # idempotent; covers a failed start
