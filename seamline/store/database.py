"""The DuckDB store: the only module that talks to the engine.

One process owns the file (DuckDB locks it). Writes go through one connection
used only by :class:`seamline.store.writer.Writer`'s thread; reads use cursors
of the same database, one per call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from seamline.errors import Conflict, NotFound, SeamlineError, StoreUnavailable
from seamline.events import EVENT_COLUMNS, EventRows, FailedEvent
from seamline.events.columns import JSON_COLUMNS
from seamline.events.timestamps import utcnow
from seamline.identity.identifiers import IdentityRules
from seamline.store.migrations import MIGRATIONS
from seamline.store.stored import StoredKeys

log = logging.getLogger("seamline.store")

DATABASE_FILE = "seamline.duckdb"
WRITE_KEY_PREFIX = "sl_wk_"
TOKEN_PREFIX = "sl_sk_"
SCOPES = ("read", "admin")

_TS = pa.timestamp("us")
_FAILED_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("message_id", pa.string()),
        ("reason", pa.string()),
        ("field", pa.string()),
        ("message", pa.string()),
        ("raw", pa.string()),
        ("received_at", _TS),
    ]
)
# a plain insert fails on a stored key; the writer takes it for groups its stored-key index
# says are all new (seamline.store.keyindex), because the conflict path grows with the table
_INSERT_EVENTS_PLAIN = (
    f"INSERT INTO events (dedup_key, {', '.join(EVENT_COLUMNS)}) "
    f"SELECT md5_number(source_id || chr(0) || message_id), {', '.join(EVENT_COLUMNS)} "
    "FROM _staged"
)
_INSERT_EVENTS = _INSERT_EVENTS_PLAIN + " ON CONFLICT DO NOTHING RETURNING source_id, message_id"
_JSON = pa.json_()


def _json_typed(table: pa.Table) -> pa.Table:
    """``table`` with its JSON columns typed as Arrow's JSON extension type.

    DuckDB then takes their text as ``JSON`` as it is; a ``VARCHAR`` would be parsed again
    to be cast (about 0.8 µs an event on the writer's thread). The text is valid JSON
    already: the request's decoder checked every byte of it (``msgspec.Raw``), or our
    encoder wrote it.
    """
    for name in JSON_COLUMNS:
        index = table.schema.get_field_index(name)
        chunks = [pa.ExtensionArray.from_storage(_JSON, chunk)
                  for chunk in table.column(index).chunks]  # fmt: skip
        table = table.set_column(index, pa.field(name, _JSON),
                                 pa.chunked_array(chunks, type=_JSON))  # fmt: skip
    return table


@dataclass(frozen=True)
class Source:
    source_id: str
    name: str
    channel: str
    unit: str | None
    write_key: str
    enabled: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channel": self.channel,
            "unit": self.unit,
            "write_key": self.write_key,
            "enabled": self.enabled,
        }


@dataclass(frozen=True)
class Token:
    token_id: str
    name: str
    scope: str


def _quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    # DuckDB draws a progress bar on stdout for long queries, which would corrupt `--json`
    # output; the option is per connection, so every cursor sets it.
    con.execute("SET enable_progress_bar = false")
    return con


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    # In an aborted transaction unregistering fails too; never let that hide the real error.
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)


def is_fatal(exc: BaseException) -> bool:
    """Whether DuckDB invalidated the database: only a reopen makes it usable again."""
    return isinstance(exc, duckdb.FatalException) or "database has been invalidated" in str(exc)


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"The store cannot be read right now ({exc}); retry shortly.")


def hash_secret(secret: str) -> str:
    # Tokens are 192-bit random strings, so a fast hash is enough (no password stretching).
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    """An open workspace database. Use :meth:`open`."""

    #: SQLGlot dialect of the analytics queries (see :class:`seamline.store.engine.Engine`)
    dialect = "duckdb"

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path):
        self._connection = connection
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path, rules: IdentityRules | None = None) -> Store:
        """Open (or create) the workspace database and apply pending migrations.

        ``rules`` normalise the contact columns a migration backfills (the phone region).
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / DATABASE_FILE
        try:
            connection = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise SeamlineError(
                    f"The workspace {data_dir} is in use by another process. "
                    "Stop it, or run the command while `seamline serve` is up so the CLI "
                    "goes through the server.",
                    code="workspace_locked",
                    status=409,
                ) from None
            raise StoreUnavailable(f"Cannot open {path}: {exc}") from None
        except duckdb.Error as exc:
            raise StoreUnavailable(
                f"Cannot open {path}: {exc}. The file (or its .wal) may be damaged; "
                "it was left untouched."
            ) from None
        _quiet(connection)
        store = cls(connection, path)
        store._migrate(rules or IdentityRules())
        return store

    # -- schema -----------------------------------------------------------------
    def _migrate(self, rules: IdentityRules) -> None:
        con = self._connection
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP)"
        )
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        applied = False
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            con.execute("BEGIN")
            if isinstance(sql, str):
                con.execute(sql)
            else:  # a data migration that needs Python (phones to E.164)
                sql(con, rules)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, description, utcnow()]
            )
            con.execute("COMMIT")
            log.info("applied migration %s: %s", version, description)
            applied = True
        if applied:
            con.execute("CHECKPOINT")

    def schema_version(self) -> int:
        row = self.query_one("SELECT max(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    # -- connections -------------------------------------------------------------
    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read cursor of its own (DuckDB cursors are not shared between threads).

        While the database is invalidated (or being reopened) reads answer
        :class:`StoreUnavailable` (503), not an unexpected 500.
        """
        try:
            cur = _quiet(self._connection.cursor())
        except duckdb.Error as exc:
            raise _unavailable(exc) from None
        try:
            yield cur
        except (duckdb.FatalException, duckdb.ConnectionException) as exc:
            raise _unavailable(exc) from None
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self.cursor() as cur:
            return cur.execute(sql, list(params)).fetchone()

    def query_arrow(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        with self.cursor() as cur:
            return cur.sql(sql, params=list(params) or None).to_arrow_table()

    def writer_connection(self) -> duckdb.DuckDBPyConnection:
        return _quiet(self._connection.cursor())

    def set_checkpoint_threshold(self, size: str) -> None:
        """DuckDB's automatic checkpoint threshold (a WAL size such as ``'64MB'``)."""
        try:
            self._connection.execute("SET checkpoint_threshold = ?", [size])
        except duckdb.Error as exc:
            self.close()
            raise SeamlineError(f"Setting 'checkpoint_threshold': {exc}",
                                code="invalid_setting") from None  # fmt: skip

    def reopen(self) -> None:
        """Replace the connection after DuckDB invalidated the database.

        DuckDB invalidates a database after a fatal error, such as a checkpoint that hit
        a full disk, and every later statement fails until it is opened again. Closing
        the connection closes its cursors and frees the instance; connecting again
        replays the WAL, so every committed transaction is back. Raises
        :class:`StoreUnavailable` while that is not possible (the disk is still full).
        """
        with self._lock:
            with contextlib.suppress(duckdb.Error):
                self._connection.close()
            try:
                connection = _quiet(duckdb.connect(str(self.path)))
                connection.execute("SELECT count(*) FROM schema_migrations").fetchone()
            except duckdb.Error as exc:
                raise StoreUnavailable(f"Cannot reopen {self.path} yet: {exc}") from None
            self._connection = connection

    def checkpoint(self) -> None:
        with self._lock:
            self._connection.execute("FORCE CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            try:
                self._connection.execute("CHECKPOINT")
            except duckdb.Error as exc:  # a failing disk must not hide the real error
                log.warning("checkpoint at close failed: %s", exc)
            self._connection.close()

    # -- sources and tokens (write helpers run on the writer's connection) -------
    def sources(self) -> list[Source]:
        rows = self.query(
            "SELECT source_id, name, channel, unit, write_key, enabled FROM sources ORDER BY name"
        )
        return [Source(*row) for row in rows]

    def source_named(self, name: str) -> Source:
        for source in self.sources():
            if source.name == name:
                return source
        from seamline.errors import did_you_mean

        names = [s.name for s in self.sources()]
        hint = did_you_mean(name, names) or (
            f" Create it with `seamline sources add {name} --channel mobile`."
        )
        raise NotFound(f"No source named '{name}'.{hint}", code="unknown_source")

    @staticmethod
    def insert_source(
        con: duckdb.DuckDBPyConnection, name: str, channel: str, unit: str | None
    ) -> Source:
        if con.execute("SELECT 1 FROM sources WHERE name = ?", [name]).fetchone():
            raise Conflict(f"A source named '{name}' already exists; pick another name.")
        source = Source(
            source_id="src_" + uuid.uuid4().hex[:12],
            name=name,
            channel=channel,
            unit=unit,
            write_key=WRITE_KEY_PREFIX + secrets.token_urlsafe(18),
            enabled=True,
        )
        con.execute(
            "INSERT INTO sources VALUES (?, ?, ?, ?, ?, TRUE, ?)",
            [source.source_id, name, channel, unit, source.write_key, utcnow()],
        )
        return source

    @staticmethod
    def insert_token(con: duckdb.DuckDBPyConnection, name: str, scope: str) -> tuple[Token, str]:
        secret = TOKEN_PREFIX + secrets.token_urlsafe(24)
        token = Token(token_id="tok_" + uuid.uuid4().hex[:12], name=name, scope=scope)
        con.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, FALSE)",
            [token.token_id, name, scope, hash_secret(secret), secret[:10] + "...", utcnow()],
        )
        return token, secret

    @staticmethod
    def revoke_tokens(con: duckdb.DuckDBPyConnection, name: str) -> int:
        """Revoke every active token with this name; returns how many."""
        rows = con.execute(
            "UPDATE tokens SET revoked = TRUE WHERE name = ? AND NOT revoked RETURNING token_id",
            [name],
        ).fetchall()
        if not rows:
            raise NotFound(f"No active API token is named '{name}'; see `seamline tokens list`.",
                           code="unknown_token")  # fmt: skip
        return len(rows)

    def token_for(self, secret: str) -> Token | None:
        row = self.query_one(
            "SELECT token_id, name, scope, token_hash FROM tokens "
            "WHERE token_hash = ? AND NOT revoked",
            [hash_secret(secret)],
        )
        if row is None or not secrets.compare_digest(row[3], hash_secret(secret)):
            return None
        return Token(row[0], row[1], row[2])

    def tokens(self) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT name, scope, hint, created_at, revoked FROM tokens ORDER BY created_at"
        )
        return [
            {"name": r[0], "scope": r[1], "hint": r[2], "created_at": r[3].isoformat(),
             "revoked": r[4]}
            for r in rows
        ]  # fmt: skip

    # -- events ------------------------------------------------------------------
    @staticmethod
    def stage_events(rows: EventRows) -> pa.Table:
        """The rows as :meth:`append_events` inserts them (no database needed)."""
        return _json_typed(rows.to_arrow())

    @staticmethod
    def append_events(
        con: duckdb.DuckDBPyConnection,
        rows: EventRows,
        failed: list[FailedEvent],
        counters: dict[str, int],
        *,
        all_new: bool = False,
        staged: pa.Table | None = None,
    ) -> StoredKeys:
        """Append rows, skipping (source, messageId) already stored; returns the keys stored.

        Runs inside the caller's transaction (the writer's group commit). ``all_new`` says
        no row is stored yet: a plain insert then stores them all, and raises
        ``duckdb.ConstraintException`` (aborting the transaction) if one was. ``staged``
        is the rows as :meth:`stage_events` gives them, if already built.
        """
        stored = StoredKeys.every_row(0)
        if len(rows):
            # the statements read this local through DuckDB's replacement scan: about 1 ms a
            # statement less than register() + unregister(), which change the catalog
            _staged = staged if staged is not None else Store.stage_events(rows)
            if all_new:
                con.execute(_INSERT_EVENTS_PLAIN)
                returned = None
            else:
                returned = con.sql(_INSERT_EVENTS).to_arrow_table()
                assert returned is not None  # RETURNING always yields a table
            if returned is None or returned.num_rows == len(rows):  # no duplicates: no per-row work
                stored = StoredKeys.every_row(len(rows))
            else:
                stored = StoredKeys.listed(zip(returned.column(0).to_pylist(),
                                               returned.column(1).to_pylist(), strict=True))
        if failed:
            table = pa.Table.from_pylist(
                [
                    {"source_id": f.source_id, "message_id": f.message_id, "reason": f.reason,
                     "field": f.field, "message": f.message, "raw": f.raw,
                     "received_at": f.received_at}
                    for f in failed
                ],
                schema=_FAILED_SCHEMA,
            )  # fmt: skip
            con.register("_failed", table)
            try:
                con.execute("INSERT INTO failed_events BY NAME SELECT * FROM _failed")
            finally:
                _unregister(con, "_failed")
        for name, value in counters.items():
            if value:
                con.execute(
                    "UPDATE counters SET value = value + ? WHERE name = ?", [value, name]
                )
        return stored

    def stats(self) -> dict[str, Any]:
        # persons are stitched persons (events with no usable identifier belong to nobody)
        events, persons = self.query_one(
            "SELECT count(*), count(DISTINCT resolved_person_id) FROM events_resolved"
        ) or (0, 0)
        failed_row = self.query_one("SELECT count(*) FROM failed_events")
        counters = dict(self.query("SELECT name, value FROM counters"))
        per_source = {
            row[0]: {"events": row[1], "last_received_at": row[2]}
            for row in self.query(
                "SELECT source_id, count(*), max(received_at) FROM events GROUP BY source_id"
            )
        }
        failed_per_source = dict(
            self.query("SELECT source_id, count(*) FROM failed_events GROUP BY source_id")
        )
        sources = []
        for source in self.sources():
            info = per_source.get(source.source_id, {})
            last: datetime | None = info.get("last_received_at")
            sources.append(
                {
                    "name": source.name,
                    "channel": source.channel,
                    "unit": source.unit,
                    "events": info.get("events", 0),
                    "failed_events": failed_per_source.get(source.source_id, 0),
                    "last_received_at": last.isoformat() if last else None,
                }
            )
        return {
            "events": events,
            "persons": persons,
            "failed_events": failed_row[0] if failed_row else 0,
            "dropped_unknown_key": counters.get("dropped_unknown_key", 0),
            "dropped_suppressed": counters.get("dropped_suppressed", 0),
            "sources": sources,
        }

    def failed_events(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT f.received_at, s.name, f.message_id, f.reason, f.field, f.message, f.raw "
            "FROM failed_events f LEFT JOIN sources s USING (source_id) "
            "ORDER BY f.received_at DESC LIMIT ?",
            [limit],
        )
        keys = ("received_at", "source", "message_id", "reason", "field", "message", "raw")
        return [
            dict(zip(keys, (r[0].isoformat(), *r[1:]), strict=True)) for r in rows
        ]

    def event_names(self, limit: int = 500) -> list[dict[str, Any]]:
        """Distinct event names (track events, page and screen names) with counts, most first."""
        rows = self.query(
            "SELECT event, count(*) AS n FROM events WHERE event IS NOT NULL "
            "GROUP BY event ORDER BY n DESC, event LIMIT ?",
            [limit],
        )
        return [{"event": name, "events": int(count)} for name, count in rows]
