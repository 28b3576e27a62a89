"""The single write path: a thread that group-commits everything queued.

Ingest requests enqueue their rows and wait on a future; the writer takes as many
queued requests as fit in one group (``group_commit_events``), appends them in one
transaction and resolves every future only after COMMIT has returned, that is
after DuckDB has fsynced its WAL. That is what makes a ``200`` mean "stored".
The queue is bounded in events: when it is full, :meth:`Writer.submit` raises
:class:`Overloaded` at once and the client gets a retryable 503.

A group goes through three steps: *prepare* (merge the requests, stitch identities in
memory, look the keys up, build the Arrow table; no database), *write* (BEGIN, the
identity changes, the events, the transaction hooks) and COMMIT, then *finish* (the key
index, the listeners, the answers). The COMMIT runs on a second thread while the writer
prepares the next group from what is queued; nothing else uses the connection until the
COMMIT has returned, and a group is written only after the one before has committed. If a
COMMIT fails, the look-ahead's stitch is thrown away with the graph's reload.

A failed commit (a full or read-only disk) answers 503 and changes nothing. DuckDB
*invalidates* the database after a fatal error, such as an automatic checkpoint that
hit a full disk; the writer then answers 503 at once and tries, at most every
``REOPEN_INTERVAL`` seconds, to reopen the database on its own thread (the WAL replay
brings back every commit) and reload the identity graph, so ingest recovers without a
restart once the cause is gone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from seamline.errors import Overloaded, SeamlineError, StoreUnavailable
from seamline.events import EventRows, FailedEvent
from seamline.identity import service as identity_service  # a module: it imports the store
from seamline.identity.stitcher import Changes
from seamline.store import identity as identity_tables
from seamline.store.database import Store, is_fatal
from seamline.store.keyindex import fingerprints, from_digests, load_index
from seamline.store.stored import StoredKeys

if TYPE_CHECKING:
    from seamline.identity.service import IdentityService

log = logging.getLogger("seamline.writer")
T = TypeVar("T")
REOPEN_INTERVAL = 0.5  # first wait before reopening an invalidated database (doubles)
REOPEN_INTERVAL_MAX = 5.0


@dataclass(frozen=True)
class AppendResult:
    stored: int
    duplicates: int
    failed: int
    reasons: dict[str, int] = field(default_factory=dict)  # failed events by reason code
    suppressed: int = 0  # dropped: an identifier of a forgotten person

    def to_dict(self) -> dict[str, Any]:
        return {"stored": self.stored, "duplicates": self.duplicates, "failed": self.failed,
                "reasons": dict(self.reasons), "suppressed": self.suppressed}  # fmt: skip


@dataclass
class _Append:
    rows: EventRows
    failed: list[FailedEvent]
    counters: dict[str, int]
    digests: bytes | None = None  # the rows' key fingerprints, if the parse computed them
    future: Future[AppendResult] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return max(1, len(self.rows) + len(self.failed))


@dataclass
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future[Any] = field(default_factory=Future)
    size: int = 1
    changes_data: bool = True


@dataclass
class _Prepared:
    """A group made ready for the database (:meth:`Writer._prepare`)."""

    jobs: list[_Append]
    rows: EventRows
    failed: list[FailedEvent]
    counters: dict[str, int]
    owned: list[list[tuple[str, str]]]  # each job's keys
    unique: bool  # no key twice in the group
    suppressed: set[tuple[str, str]]
    changes: Changes  # the identity graph's, persisted in the group's transaction
    fps: np.ndarray  # the rows' key fingerprints
    all_new: bool  # no key stored yet, as far as the index knows: a plain insert
    staged: pa.Table | None
    stored: StoredKeys = field(default_factory=lambda: StoredKeys.every_row(0))


@dataclass
class _Inflight:
    """A group written and committing on the commit thread."""

    prepared: _Prepared
    commit: Future[None]
    started: float
    reload: bool = False  # the next group's look-ahead failed: reload the identity graph


def _owned_counts(owned: list[list[tuple[str, str]]], stored: set[tuple[str, str]],
                  suppressed: set[tuple[str, str]]) -> list[tuple[int, int]]:  # fmt: skip
    """(stored, suppressed) per request; a key repeated across requests counts for its first."""
    counts = []
    for keys in owned:
        mine = dropped = 0
        for key in keys:
            if key in stored:
                stored.discard(key)
                mine += 1
            elif key in suppressed:
                suppressed.discard(key)
                dropped += 1
        counts.append((mine, dropped))
    return counts


class WriterProfile:
    """Where the writer's time goes, phase by phase, summed over the ingest groups committed.

    Wall time and the writer thread's own CPU time are kept apart: the difference is time
    spent waiting, for the GIL (other threads running Python) or the disk (the fsync).
    Served in ``stats()["writer"]``; ``bench/ingest.py`` reports it.
    """

    PHASES = ("merge", "stitch", "append", "hooks", "commit", "answer")

    def __init__(self) -> None:
        self.groups = 0
        self.events = 0
        # groups that took DuckDB's conflict path: the stored-key index saw a possible
        # duplicate, or (a miss) the plain insert met one and the group was committed again
        self.conflict_path = 0
        self.index_misses = 0
        self.wall = dict.fromkeys(self.PHASES, 0.0)
        self.cpu = dict.fromkeys(self.PHASES, 0.0)
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def mark(self, phase: str) -> None:
        """The phase that started at the previous mark (or :meth:`start`) ends now."""
        wall, cpu = time.perf_counter(), time.thread_time()
        self.wall[phase] += wall - self._wall
        self.cpu[phase] += cpu - self._cpu
        self._wall, self._cpu = wall, cpu

    def to_dict(self) -> dict[str, Any]:
        per_event = 1e6 / self.events if self.events else 0.0
        return {
            "groups": self.groups,
            "events": self.events,
            "events_per_group": round(self.events / self.groups, 1) if self.groups else 0,
            "conflict_path_groups": self.conflict_path,
            "index_misses": self.index_misses,
            "wall_us_per_event": {k: round(v * per_event, 2) for k, v in self.wall.items()},
            "cpu_us_per_event": {k: round(v * per_event, 2) for k, v in self.cpu.items()},
        }


class Writer:
    """Owns the write connection. Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        store: Store,
        *,
        queue_max_events: int = 200_000,
        group_commit_events: int = 5000,
        group_commit_wait_ms: int = 2,
        retry_after_seconds: int = 2,
        identity: IdentityService | None = None,
    ):
        self._store = store
        self._con = store.writer_connection()
        # Identity runs in the writer's transaction, so persons are committed with events.
        self.identity = identity or identity_service.IdentityService()
        self.identity.reload(self._con)
        # what is stored already: most groups then skip the conflict path (store.keyindex)
        self.stored_keys = load_index(self._con)
        self._queue: deque[_Append | _Call] = deque()
        self._queued_events = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="seamline-writer", daemon=True)
        # runs each group's COMMIT while this thread prepares the next group (no statement
        # of the writer's runs meanwhile: the connection is the commit's until it returns)
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="seamline-commit")
        self._landed = 0.0  # when the last group's requests were answered
        self.queue_max_events = queue_max_events
        self.group_commit_events = group_commit_events
        self.group_commit_wait = group_commit_wait_ms / 1000
        self.retry_after_seconds = retry_after_seconds
        self.commits = 0
        self.profile = WriterProfile()
        # events a second the writer commits while busy (moving average over groups):
        # what turns the queue's length into a wait, see :meth:`expected_wait`
        self.commit_rate = 0.0
        # bumped after every COMMIT (events, identities, calls), before the caller hears of
        # it: results computed at an older version are stale (seamline.analytics.cache)
        self.data_version = 0
        self.reopens = 0  # times the database was reopened after a fatal error
        self._broken: BaseException | None = None  # the fatal error, until a reopen works
        self._next_reopen = 0.0
        self._reopen_delay = REOPEN_INTERVAL
        self._commits_at_reopen = 0
        self._last_fail_log = -1.0
        self._unlogged = 0
        self._listeners: list[Callable[[EventRows], None]] = []
        self._hooks: list[
            Callable[[duckdb.DuckDBPyConnection, EventRows, StoredKeys], None]
        ] = []

    # -- public ------------------------------------------------------------------
    def start(self) -> Writer:
        self._thread.start()
        return self

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def expected_wait(self, arriving: float = 0.0) -> float:
        """Seconds the queued events, and ``arriving`` more on their way (bodies being
        parsed), will take to commit at the recent commit rate."""
        rate = self.commit_rate
        return (self._queued_events + arriving) / rate if rate > 0 else 0.0

    @property
    def healthy(self) -> bool:
        """False while the database is invalidated and not yet reopened."""
        return self._broken is None

    def submit(
        self, rows: EventRows, failed: list[FailedEvent], counters: dict[str, int] | None = None,
        *, digests: bytes | None = None,
    ) -> Future[AppendResult]:
        """Queue rows for the next group commit; raises :class:`Overloaded` if full.

        ``digests`` are the rows' key fingerprints
        (:func:`seamline.events.keys.key_digests`), if known: the writer then need not
        compute them.
        """
        job = _Append(rows, failed, counters or {}, digests)
        self._enqueue(job)
        return job.future

    def call(
        self, fn: Callable[[duckdb.DuckDBPyConnection], T], *, changes_data: bool = True
    ) -> Future[T]:
        """Run ``fn(connection)`` in its own transaction on the writer thread.

        ``changes_data=False`` says it writes nothing an analysis reads (events, identities,
        sources, counters): the commit then leaves :attr:`data_version` (and so every cached
        result) as it was. Audit logs, sign-in records and moment deliveries use it.
        """
        job = _Call(fn, changes_data=changes_data)
        self._enqueue(job)
        return job.future

    def add_listener(self, listener: Callable[[EventRows], None]) -> None:
        """Call ``listener(rows)`` on the writer thread after each commit that stored events.

        Listeners must be quick and must not raise (live views, moment triggers); the rows
        include duplicates that were not stored again.
        """
        self._listeners.append(listener)

    def add_transaction_hook(
        self, hook: Callable[[duckdb.DuckDBPyConnection, EventRows, StoredKeys], None]
    ) -> None:
        """Call ``hook(connection, rows, stored_keys)`` inside each group's transaction.

        It runs after the events are appended and before COMMIT, so what it writes (moment
        triggers, for instance) is committed with the events or not at all. ``stored_keys``
        are the (source_id, message_id) pairs newly stored (not duplicates). If it raises,
        the group is rolled back and retried request by request.
        """
        self._hooks.append(hook)

    def stop(self, timeout: float = 30) -> None:
        """Stop taking work, commit everything queued, then return."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._committer.shutdown()
        self._con.close()

    # -- internals ----------------------------------------------------------------
    def _enqueue(self, job: _Append | _Call) -> None:
        with self._cond:
            if self._stopping:
                raise Overloaded(
                    "The server is shutting down; retry shortly.",
                    retry_after=self.retry_after_seconds,
                    code="shutting_down",
                )
            if self._queued_events and self._queued_events + job.size > self.queue_max_events:
                raise Overloaded(
                    f"The write queue is full ({self._queued_events} events waiting); "
                    "retry after the Retry-After delay.",
                    retry_after=self.retry_after_seconds,
                )
            self._queue.append(job)
            self._queued_events += job.size
            self._cond.notify()

    def _take(self, wait: bool = True) -> list[_Append | _Call] | None:
        """The next group ([] when there is none and ``wait`` is False, or to reopen an
        invalidated database); None once stopping with nothing queued."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                if not wait:
                    return []
                if self._broken is not None:  # idle but invalidated: reopen when due,
                    self._cond.wait(max(0.05, self._next_reopen - time.monotonic()))
                    return []  # so reads recover even with no write coming in
                self._cond.wait()
            first = self._queue.popleft()
            self._queued_events -= first.size
            if isinstance(first, _Call):
                return [first]
            group: list[_Append | _Call] = [first]
            size = first.size
            deadline = time.monotonic() + self.group_commit_wait
            while size < self.group_commit_events:
                if not self._queue:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._stopping:
                        break
                    self._cond.wait(remaining)
                    continue
                nxt = self._queue[0]
                if isinstance(nxt, _Call) or size + nxt.size > self.group_commit_events:
                    break
                self._queue.popleft()
                self._queued_events -= nxt.size
                group.append(nxt)
                size += nxt.size
            return group

    def _run(self) -> None:
        inflight: _Inflight | None = None  # a group whose COMMIT runs on the commit thread
        while True:
            group = self._take(wait=inflight is None)
            prepared: _Prepared | None = None
            if inflight is not None:
                if group and isinstance(group[0], _Append) and self._broken is None:
                    # the next group's in-memory work, while the COMMIT waits on the disk
                    try:
                        prepared = self._prepare([job for job in group
                                                  if isinstance(job, _Append)],
                                                 committing=inflight.prepared.fps)  # fmt: skip
                    except Exception:  # noqa: BLE001 - done again below, the usual way
                        prepared, inflight.reload = None, True
                if not self._land(inflight) or inflight.reload:
                    prepared = None  # stitched on a graph the failure (or reload) replaced
                inflight = None
            if group is None:
                return
            if not group:
                if self._broken is not None:
                    self._reopen()
                continue
            if self._broken is not None and not self._reopen():
                for job in group:  # nothing can commit until the database is reopened
                    self._fail(job, self._broken)
                continue
            if isinstance(group[0], _Call):
                self._run_call(group[0])
                continue
            appends = [job for job in group if isinstance(job, _Append)]
            started = time.monotonic()
            try:
                if prepared is None:
                    prepared = self._prepare_or_reload(appends)
                if self._write(prepared):
                    inflight = _Inflight(prepared, self._committer.submit(self._commit_open),
                                         started)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - isolate the poisoned request
                self._retry_alone(appends, exc)

    def _commit_open(self) -> None:
        """COMMIT the open transaction (on the commit thread)."""
        self._con.execute("COMMIT")

    def _land(self, inflight: _Inflight) -> bool:
        """Wait for a group's COMMIT, then answer its requests; False if it failed."""
        self.profile.start()
        try:
            inflight.commit.result()
        except Exception as exc:  # noqa: BLE001 - the group's requests hear of it
            self._rollback(exc)  # reloads the graph, and drops the look-ahead's stitch
            self._retry_alone(inflight.prepared.jobs, exc)
            return False
        if inflight.reload and self._broken is None:  # a failed look-ahead stitch
            self._rollback()
        self.profile.mark("commit")
        self._finish(inflight.prepared)
        now = time.monotonic()
        # groups overlap: the rate counts from the previous group's answers, not its start
        self._measure(sum(job.size for job in inflight.prepared.jobs),
                      now - max(inflight.started, self._landed))  # fmt: skip
        self._landed = now
        return True

    def _retry_alone(self, appends: list[_Append], exc: BaseException) -> None:
        """A group failed: each request alone, so one bad request fails only itself."""
        if len(appends) == 1 or self._broken is not None:
            for job in appends:
                self._fail(job, exc)
            return
        log.warning("group commit failed (%s); retrying requests one by one", exc)
        for job in appends:
            try:
                self._commit([job])
            except Exception as single_exc:  # noqa: BLE001
                self._fail(job, single_exc)

    def _measure(self, events: int, seconds: float) -> None:
        if events >= 100 and seconds > 0:  # tiny groups say more about latency than rate
            rate = events / seconds
            self.commit_rate = rate if not self.commit_rate else (
                0.8 * self.commit_rate + 0.2 * rate)  # fmt: skip

    def _commit(self, jobs: list[_Append], *, careful: bool = False) -> None:
        """Append and commit one group; ``careful`` sends it down DuckDB's conflict path
        whatever the stored-key index says."""
        prepared = self._prepare_or_reload(jobs, careful=careful)
        if not self._write(prepared):
            return
        try:
            self._con.execute("COMMIT")
        except BaseException as exc:
            self._rollback(exc)
            raise
        self.profile.mark("commit")
        self._finish(prepared)

    def _prepare_or_reload(self, jobs: list[_Append], *, careful: bool = False) -> _Prepared:
        """:meth:`_prepare`; if it fails, the identity graph may hold half a group: it is
        reloaded before the error goes on."""
        try:
            return self._prepare(jobs, careful=careful)
        except BaseException as exc:
            self._rollback(exc)
            raise

    def _prepare(self, jobs: list[_Append], *, careful: bool = False,
                 committing: np.ndarray | None = None) -> _Prepared:  # fmt: skip
        """A group's work that needs no database: merge, stitch in memory, key lookup and
        the Arrow table. ``committing`` are the keys of a group whose COMMIT is running
        (not in the stored-key index yet)."""
        profile = self.profile
        profile.start()
        rows = EventRows()
        failed: list[FailedEvent] = []
        counters: dict[str, int] = {}
        owned = [job.rows.keys() for job in jobs]
        unique = len(set().union(*owned)) == sum(map(len, owned))
        seen: set[tuple[str, str]] = set()
        for job, keys in zip(jobs, owned, strict=True):
            if unique:  # the common case: whole columns, no per-row copying
                if len(jobs) == 1:
                    rows = job.rows
                else:
                    rows.extend(job.rows)
            else:  # drop repeats inside the group; the first copy wins
                for index, key in enumerate(keys):
                    if key not in seen:
                        seen.add(key)
                        rows.append({name: col[index] for name, col in job.rows.columns.items()})
            failed.extend(job.failed)
            for name, value in job.counters.items():
                counters[name] = counters.get(name, 0) + value
        profile.mark("merge")
        rows, suppressed, changes = self.identity.prepare(rows)
        if suppressed:
            counters["dropped_suppressed"] = counters.get("dropped_suppressed", 0) + len(
                suppressed
            )
        profile.mark("stitch")
        if unique and not suppressed and all(job.digests is not None or not len(job.rows)
                                             for job in jobs):  # fmt: skip
            # the rows are the jobs' rows, in order: their fingerprints are known
            fps = from_digests(b"".join(job.digests or b"" for job in jobs))
        else:
            fps = fingerprints(rows.columns["source_id"], rows.columns["message_id"])
        all_new = not careful and not self.stored_keys.any_stored(fps) and (
            committing is None or not np.isin(fps, committing).any())
        staged = Store.stage_events(rows) if len(rows) else None
        profile.mark("append")
        return _Prepared(jobs, rows, failed, counters, owned, unique, suppressed, changes,
                         fps, all_new, staged)  # fmt: skip

    def _write(self, prepared: _Prepared) -> bool:
        """BEGIN and everything up to COMMIT. False when the group was committed another
        way already (a stored key the index missed: again through the conflict path)."""
        profile = self.profile
        con = self._con
        rows = prepared.rows
        plain_insert = False  # a constraint error before the insert is no index miss
        try:
            con.execute("BEGIN")
            identity_tables.persist(con, prepared.changes)
            profile.mark("stitch")
            profile.conflict_path += not prepared.all_new
            plain_insert = prepared.all_new
            prepared.stored = Store.append_events(
                con, rows, prepared.failed, prepared.counters, all_new=prepared.all_new,
                staged=prepared.staged)  # fmt: skip
            plain_insert = False
            profile.mark("append")
            for hook in self._hooks:
                hook(con, rows, prepared.stored)
            profile.mark("hooks")
        except duckdb.ConstraintException as exc:
            self._rollback(exc)
            if not plain_insert:
                raise
            # a stored key the index did not know (stored by another path): the plain insert
            # refused the whole group, so commit it again the careful way
            log.warning("a group met a stored event the key index did not know; committing "
                        "it again through the conflict path: %s", exc)  # fmt: skip
            profile.index_misses += 1
            self._commit(prepared.jobs, careful=True)
            return False
        except BaseException as exc:
            self._rollback(exc)
            raise
        return True

    def _finish(self, prepared: _Prepared) -> None:
        """After COMMIT: the index, the listeners, and every request's answer."""
        profile = self.profile
        rows, stored, owned = prepared.rows, prepared.stored, prepared.owned
        self.stored_keys.add(prepared.fps)
        self.commits += 1
        self.data_version += 1
        for listener in self._listeners:
            try:
                listener(rows)
            except Exception:  # a listener must never break ingest
                log.exception("a commit listener failed")
        if stored.every and prepared.unique and not prepared.suppressed:  # no per-key work
            counts = [(len(keys), 0) for keys in owned]
        else:
            counts = _owned_counts(owned, set(rows.keys()) if stored.every else stored.keys,
                                   prepared.suppressed)  # fmt: skip
        for job, keys, (mine, dropped) in zip(prepared.jobs, owned, counts, strict=True):
            reasons: dict[str, int] = {}
            for failure in job.failed:
                reasons[failure.reason] = reasons.get(failure.reason, 0) + 1
            job.future.set_result(
                AppendResult(mine, len(keys) - mine - dropped, len(job.failed), reasons, dropped)
            )
        profile.mark("answer")
        profile.groups += 1
        profile.events += len(rows) + len(prepared.failed)

    def _rollback(self, exc: BaseException | None = None) -> None:
        """Undo the open transaction and the identity graph's in-memory changes with it."""
        if exc is not None and is_fatal(exc):
            if self._broken is None:
                log.error("the database was invalidated by a fatal error; answering 503 and "
                          "reopening it once possible: %s", exc)  # fmt: skip
            if self.reopens and self.commits == self._commits_at_reopen:
                # invalidated again before any commit since the reopen (the disk is still
                # full): wait longer each time, up to REOPEN_INTERVAL_MAX
                self._reopen_delay = min(self._reopen_delay * 2, REOPEN_INTERVAL_MAX)
            else:
                self._reopen_delay = REOPEN_INTERVAL
            self._broken = exc
            self._next_reopen = time.monotonic() + self._reopen_delay
            return  # every statement fails until the reopen; it reloads the graph
        with contextlib.suppress(duckdb.Error):
            self._con.execute("ROLLBACK")
        try:
            self.identity.reload(self._con)
        except duckdb.Error as exc:  # the store itself is failing; the next commit will say
            log.error("could not reload the identity graph after a rollback: %s", exc)

    def _run_call(self, job: _Call) -> None:
        con = self._con
        try:
            con.execute("BEGIN")
            result = job.fn(con)
            con.execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001
            self._rollback(exc)
            self._fail(job, exc)
            return
        self.data_version += job.changes_data
        job.future.set_result(result)

    def _reopen(self) -> bool:
        """Try to reopen an invalidated database (throttled); True when it worked."""
        now = time.monotonic()
        if now < self._next_reopen:
            return False
        self._next_reopen = now + self._reopen_delay
        try:
            self._store.reopen()  # closes the old connection, and this cursor with it
            con = self._store.writer_connection()
            self.identity.reload(con)
            stored_keys = load_index(con)
        except (duckdb.Error, SeamlineError) as exc:
            log.warning("the database cannot be reopened yet (answering 503): %s", exc)
            self._reopen_delay = min(self._reopen_delay * 2, REOPEN_INTERVAL_MAX)
            self._next_reopen = now + self._reopen_delay
            return False
        self._con = con
        self.stored_keys = stored_keys
        self._broken = None
        self.reopens += 1
        self._commits_at_reopen = self.commits
        log.warning("reopened the database after a fatal error; ingest resumes")
        return True

    def _fail(self, job: _Append | _Call, exc: BaseException) -> None:
        if isinstance(exc, SeamlineError):
            job.future.set_exception(exc)
            return
        now = time.monotonic()
        if now - self._last_fail_log >= 1.0:  # one line a second, not one per request
            more = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
            log.error("store write failed, answering 503%s: %s", more, exc)
            self._last_fail_log, self._unlogged = now, 0
        else:
            self._unlogged += 1
        job.future.set_exception(
            StoreUnavailable(
                f"The store could not commit ({type(exc).__name__}: {exc}); retry later "
                "(a retried event is never stored twice).",
                retry_after=self.retry_after_seconds,
            )
        )
