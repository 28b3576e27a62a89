"""The application object: wires the store, the writer and the collector.

It holds no logic of its own. The CLI, the JSON API and the Python API are three
faces of these methods; :class:`seamline.client.RemoteWorkspace` offers the same
methods over HTTP for when a running server owns the workspace.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seamline.collect import Collector
from seamline.errors import BadRequest, did_you_mean
from seamline.settings import Settings
from seamline.store import SCOPES, AppendResult, Store, Writer

log = logging.getLogger("seamline")

CHANNELS = ("mobile", "web", "server", "call_center", "email", "store", "sms", "push", "chat")
DEFAULT_DATA_DIR = Path("seamline-data")


class Workspace:
    """An open workspace. Prefer :func:`seamline.open`; close it when done."""

    def __init__(self, data_dir: Path, settings: Settings | None = None):
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings.load(self.data_dir)
        self.store = Store.open(self.data_dir)
        self.writer = Writer(
            self.store,
            queue_max_events=self.settings.queue_max_events,
            group_commit_events=self.settings.group_commit_events,
            group_commit_wait_ms=self.settings.group_commit_wait_ms,
            retry_after_seconds=self.settings.retry_after_seconds,
        ).start()
        self.collector = Collector(self.store, self.writer, self.settings)
        self._closed = False

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit everything queued, checkpoint and release the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.writer.stop()
        self.store.close()

    # -- sources and tokens --------------------------------------------------------
    def add_source(self, name: str, channel: str, unit: str | None = None) -> dict[str, Any]:
        name = name.strip()
        if not name:
            raise BadRequest("A source needs a name.", code="invalid_name")
        if channel not in CHANNELS:
            raise BadRequest(
                f"Unknown channel '{channel}'; use one of {', '.join(CHANNELS)}."
                f"{did_you_mean(channel, CHANNELS)}",
                code="invalid_channel",
            )
        source = self.writer.call(lambda con: Store.insert_source(con, name, channel, unit))
        result = source.result()
        self.collector.refresh_sources()
        return {"name": result.name, "channel": result.channel, "unit": result.unit,
                "write_key": result.write_key}  # fmt: skip

    def sources(self) -> list[dict[str, Any]]:
        return [source.to_dict() for source in self.store.sources()]

    def add_token(self, name: str, scope: str) -> dict[str, Any]:
        if scope not in SCOPES:
            raise BadRequest(
                f"Unknown scope '{scope}'; use 'read' or 'admin'.{did_you_mean(scope, SCOPES)}",
                code="invalid_scope",
            )
        token, secret = self.writer.call(lambda con: Store.insert_token(con, name, scope)).result()
        return {"name": token.name, "scope": token.scope, "token": secret}

    def tokens(self) -> list[dict[str, Any]]:
        return self.store.tokens()

    # -- data ------------------------------------------------------------------
    def import_events(self, source: str, events: list[Any]) -> dict[str, Any]:
        """Import decoded events for a source, keeping their timestamps; returns counts."""
        result: AppendResult = self.collector.import_events(
            self.store.source_named(source), events
        ).result()
        return result.to_dict()

    def stats(self) -> dict[str, Any]:
        return self.store.stats()

    def failed_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.failed_events(limit)
