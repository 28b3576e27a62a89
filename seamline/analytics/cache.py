"""Analysis results kept until the data changes: a bounded LRU keyed by (analysis, parameters).

Every entry remembers the *data version* it was computed at (a counter the writer bumps
after each commit, see :attr:`seamline.store.Writer.data_version`) and is only served while
the version is unchanged, so a page never shows a result from before a committed write.
The version is read *before* the analysis runs: a commit that lands while it runs makes the
entry stale at once rather than hiding the commit. Entries also expire after ``max_age``
seconds, because some results depend on the clock (funnel attempts still in progress,
retention periods observed so far).

Concurrent requests for the same key and version share one computation ("single flight"),
so a page view that arrives while the background precompute is running waits for it
instead of starting a second scan.

    >>> cache = ResultCache(max_entries=2)
    >>> cache.get_or_compute(("answer", ()), lambda: 1, lambda: 42).value
    42
    >>> cache.get_or_compute(("answer", ()), lambda: 1, lambda: 0).hit
    True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Key = tuple[str, tuple[tuple[str, Hashable], ...]]


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A result with when it was computed. Treat ``value`` as read-only: it is shared."""

    value: T
    version: int  # the data version the result reflects
    computed_at: datetime  # UTC, when the computation started
    seconds: float  # how long the computation took
    hit: bool  # served from the cache (or from a computation another caller started)

    @property
    def as_of(self) -> str:
        """``HH:MM:SS`` (UTC) of the data the result reflects."""
        return self.computed_at.strftime("%H:%M:%S")


@dataclass
class _Entry:
    value: Any
    version: int
    computed_at: datetime
    seconds: float
    stored: float  # time.monotonic() when stored, for max_age


def freeze(value: Any) -> Hashable:
    """A hashable, order-stable form of a parameter value (lists and dicts included)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return tuple(sorted(freeze(v) for v in value))  # type: ignore[type-var]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def key_of(analysis: str, params: Mapping[str, Any]) -> Key:
    return analysis, tuple(sorted((name, freeze(value)) for name, value in params.items()))


class ResultCache:
    """Thread-safe LRU of analysis results, each valid for one data version."""

    def __init__(self, max_entries: int = 64, max_age: float = 600.0):
        self.max_entries = max(0, max_entries)
        self.max_age = max_age
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._flights: dict[tuple[Key, int], Future[Cached[Any]]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, key: Key, version: int) -> Cached[Any] | None:
        """The entry for ``key`` if it was computed at ``version`` and is not too old."""
        with self._lock:
            return self._fresh(key, version)

    def _fresh(self, key: Key, version: int) -> Cached[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version or time.monotonic() - entry.stored > self.max_age:
            if entry.version <= version:  # stale for good: free it now
                del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return Cached(entry.value, entry.version, entry.computed_at, entry.seconds, True)

    def get_or_compute(
        self, key: Key, version_of: Callable[[], int], compute: Callable[[], T]
    ) -> Cached[T]:
        """The cached result for the current data version, else ``compute()`` (once)."""
        version = version_of()  # before computing: a commit during the run makes it stale
        with self._lock:
            found = self._fresh(key, version)
            if found is not None:
                self.hits += 1
                return found
            flight = self._flights.get((key, version))
            owner = flight is None
            if flight is None:
                flight = self._flights[(key, version)] = Future()
            self.misses += owner
        if not owner:
            shared: Cached[T] = flight.result()
            return Cached(shared.value, shared.version, shared.computed_at, shared.seconds, True)
        started_at, started = datetime.now(UTC), time.perf_counter()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._flights[(key, version)]
            flight.set_exception(exc)
            raise
        result = Cached(value, version, started_at, time.perf_counter() - started, False)
        with self._lock:
            del self._flights[(key, version)]
            current = self._entries.get(key)
            if self.max_entries and (current is None or current.version <= version):
                self._entries[key] = _Entry(value, version, started_at, result.seconds,
                                            time.monotonic())  # fmt: skip
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        flight.set_result(result)
        return result


def run_cached(target: Any, analysis: str, **params: Any) -> Any:
    """``target.analysis(**params)`` through ``target.cached`` when it has a result cache
    (a :class:`~seamline.app.Workspace`), else called directly (other workspaces)."""
    cached = getattr(target, "cached", None)
    if cached is None:
        return getattr(target, analysis)(**params)
    return cached(analysis, **params).value


class SharedRows:
    """An engine wrapper that shares query results (sorted Arrow rows) between analyses
    while the data version is unchanged.

    Seams, the journey map and paths all scan the same sorted touchpoints; on a million
    events that scan is most of their time. Tables are kept newest first within a byte
    budget (``max_bytes``; 0 keeps none), and a table from an older data version is never
    returned. Arrow tables are immutable, so sharing them is safe.
    """

    def __init__(self, engine: Any, version_of: Callable[[], int], max_bytes: int,
                 max_age: float = 600.0):  # fmt: skip
        self.engine = engine
        self.dialect: str = engine.dialect
        self.version_of = version_of
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._tables: OrderedDict[str, tuple[int, float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def query_arrow(self, sql: str) -> Any:
        version = self.version_of()  # before the query, as in ResultCache
        now = time.monotonic()
        with self._lock:
            for key, (seen, stored, _) in list(self._tables.items()):
                if seen != version or now - stored > self.max_age:
                    del self._tables[key]  # stale: free the memory now
            found = self._tables.get(sql)
            if found is not None:
                self._tables.move_to_end(sql)
                self.hits += 1
                return found[2]
        table = self.engine.query_arrow(sql)
        size = int(getattr(table, "nbytes", 0))
        with self._lock:
            if size <= self.max_bytes and version == self.version_of():
                self._tables[sql] = (version, time.monotonic(), table)
                while sum(int(getattr(t, "nbytes", 0)) for _, _, t in self._tables.values()) \
                        > self.max_bytes:  # fmt: skip
                    self._tables.popitem(last=False)
        return table
