"""The sequence snapshot: every event with a person, sorted once per data version.

The analytics queries of :mod:`seamline.analytics.query` each ask the engine for the
events of persons sorted by (person id, time, message_id); on a big workspace that sort
of text keys is most of an analysis' time. A :class:`Snapshot` holds the same rows sorted
once, as integer arrays (person number in person-id order, microseconds, and a dictionary
code per text column), so an analysis the snapshot can answer (event-name steps,
dimension filters and breakdowns, date ranges) selects its rows with vectorised masks and
hands the kernel the same table the SQL path would have: same rows, same order, same
values (as Arrow dictionary arrays). Anything else (property filters such as
``properties.plan``) keeps the SQL path.

:class:`SnapshotHolder` keeps one snapshot per process, for one data version: a commit
(ingest, forget, merge) bumps the version and the next analysis rebuilds it, so a stale
snapshot is never used.

Memory: 4 (person) + 8 (time) + 4 per column (:data:`COLUMNS`, 7 of them) + 8 (the
touchpoint row index) = 48 bytes a row, plus the person ids: ~520 MiB for 9.9M events and
1.7M persons (the benchmark world).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from seamline.analytics.definitions import DateRange, FunnelDefinition

#: Columns the snapshot holds as codes: the label parts, the lanes and the breakdowns the
#: dashboard and seams use. Filters or breakdowns on other dimensions (locale, os_version,
#: ...) or on properties keep the SQL path; each column here costs 4 bytes a row and a
#: hash join when the snapshot is built.
COLUMNS: tuple[str, ...] = ("event", "type", "channel", "unit", "source", "app_version",
                            "os_name")  # fmt: skip
TOUCHPOINTS = ("track", "page", "screen")
_EPOCH = datetime(1970, 1, 1)


@dataclass
class Snapshot:
    """Sorted rows as arrays; ``codes[c][i]`` indexes ``values[c]``, whose last value is
    null (see :meth:`build`)."""

    version: int
    person: NDArray[np.int32]
    ts: NDArray[np.int64]
    person_ids: pa.Array
    codes: dict[str, NDArray[np.int32]]
    values: dict[str, pa.Array]
    build_seconds: float = 0.0
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, version: int, fetched: Any, seconds: float = 0.0) -> Snapshot:
        """From the store's fetch (codes -1 for null): nulls become a last, null value of
        each dictionary, so a column is a dictionary array without any copy."""
        codes, values = {}, {}
        for name, column in fetched.columns.items():
            dictionary = fetched.dictionaries[name]
            if not column.flags.writeable:  # a zero-copy view of Arrow memory
                column = column.copy()
            column[column < 0] = len(dictionary)
            codes[name] = column
            values[name] = pa.concat_arrays([dictionary, pa.nulls(1, pa.string())])
        snap = cls(version, fetched.person, fetched.ts, fetched.person_ids, codes, values,
                   seconds)  # fmt: skip
        snap.touchpoint_rows()  # what journeys, seams and paths start from
        return snap

    def __len__(self) -> int:
        return len(self.person)

    @property
    def nbytes(self) -> int:
        return int(self.person.nbytes + self.ts.nbytes + self.person_ids.nbytes
                   + sum(c.nbytes for c in self.codes.values())
                   + sum(v.nbytes for v in self.values.values()))  # fmt: skip

    # -- lookups --------------------------------------------------------------------------
    def answers(self, fields: list[str]) -> bool:
        """Whether every field is a column of the snapshot (else: the SQL path)."""
        return all(name in self.codes for name in fields)

    def _index(self, column: str) -> dict[str, int]:
        key = ("index", column)
        found = self._cache.get(key)
        if found is None:
            found = {v: i for i, v in enumerate(self.values[column].to_pylist()) if v is not None}
            with self._lock:
                self._cache[key] = found
        return found

    def code(self, column: str, value: Any) -> int:
        """The code of ``value`` (compared as text, as the SQL path does); -2 if absent."""
        return self._index(column).get(str(value), -2)

    def equals(self, column: str, value: Any, rows: NDArray[np.int64] | None = None
               ) -> NDArray[np.bool_]:  # fmt: skip
        codes = self.codes[column] if rows is None else self.codes[column][rows]
        return codes == self.code(column, value)

    def lookup(self, column: str, values: tuple[str, ...] | list[str]) -> NDArray[np.bool_]:
        """A table code -> whether its value is one of ``values``."""
        wanted = np.zeros(len(self.values[column]), dtype=bool)
        for value in values:
            code = self.code(column, value)
            if code >= 0:
                wanted[code] = True
        return wanted

    def isin(self, column: str, values: tuple[str, ...]) -> NDArray[np.bool_]:
        return self.lookup(column, values)[self.codes[column]]

    def touchpoint(self) -> NDArray[np.bool_]:
        found = self._cache.get("touchpoint")
        if found is None:
            found = self.isin("type", TOUCHPOINTS)
            with self._lock:
                self._cache["touchpoint"] = found
        return found

    def touchpoint_rows(self) -> NDArray[np.int64]:
        """The rows of track, page and screen calls (kept: most analyses start there)."""
        found = self._cache.get("touchpoint_rows")
        if found is None:
            found = np.flatnonzero(self.touchpoint())
            with self._lock:
                self._cache["touchpoint_rows"] = found
        return found

    def label(self) -> tuple[NDArray[np.int32], pa.Array]:
        """``coalesce(event, type)`` as codes into its own dictionary."""
        found = self._cache.get("label")
        if found is None:
            events = self.values["event"].to_pylist()[:-1]  # without the null slot
            types = self.values["type"].to_pylist()[:-1]
            names: list[str | None] = list(events)
            index = {v: i for i, v in enumerate(names)}
            type_to_label = np.empty(len(types) + 1, dtype=np.int32)
            for i, t in enumerate(types):
                if t not in index:
                    index[t] = len(names)
                    names.append(t)
                type_to_label[i] = index[t]
            type_to_label[-1] = len(names)  # neither: null
            names.append(None)
            event_codes = self.codes["event"]
            codes = np.where(event_codes < len(events), event_codes,
                             type_to_label[self.codes["type"]]).astype(np.int32)  # fmt: skip
            found = (codes, pa.array(names, type=pa.string()))
            with self._lock:
                self._cache["label"] = found
        return found

    def date_rows(self, dates: DateRange, rows: NDArray[np.int64] | None = None
                  ) -> NDArray[np.int64] | None:  # fmt: skip
        """``rows`` (None: all) narrowed to the date range (None: all rows, no range)."""
        if dates.start is None and dates.end is None:
            return rows
        ts = self.ts if rows is None else self.ts[rows]
        keep = np.ones(len(ts), dtype=bool)
        # the SQL path casts the ISO text to TIMESTAMP, which keeps the wall-clock time and
        # ignores any UTC offset: do the same
        if dates.start is not None:
            keep &= ts >= _micros(dates.start)
        if dates.end is not None:
            keep &= ts < _micros(dates.end)
        return np.flatnonzero(keep) if rows is None else rows[keep]

    # -- kernel inputs ----------------------------------------------------------------------
    def person_column(self, rows: NDArray[np.int64] | None) -> pa.DictionaryArray:
        person = self.person if rows is None else self.person[rows]
        return pa.DictionaryArray.from_arrays(pa.array(person), self.person_ids)

    def column(self, name: str, rows: NDArray[np.int64] | None) -> pa.DictionaryArray:
        """A column's codes as a dictionary array (its last value null, so the kernels'
        :func:`~seamline.analytics.sequences.dictionary` needs no null handling)."""
        return _dictionary(self.codes[name], self.values[name], rows)


def _dictionary(codes: NDArray[np.int32], values: pa.Array, rows: NDArray[np.int64] | None
                ) -> pa.DictionaryArray:  # fmt: skip
    return pa.DictionaryArray.from_arrays(pa.array(codes if rows is None else codes[rows]),
                                          values)  # fmt: skip


def _micros(moment: datetime) -> int:
    return (moment.replace(tzinfo=None) - _EPOCH) // _MICROSECOND


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1) - _EPOCH


# -- tables for the kernels ------------------------------------------------------------------
def _ties_in_order(snap: Snapshot, rows: NDArray[np.int64], tie: NDArray[np.int64]
                   ) -> NDArray[np.int64]:  # fmt: skip
    """``rows`` (in snapshot order) with rows of equal (person, ts) ordered by ``tie``,
    message_id order kept among equal ties: the funnel query's ORDER BY."""
    if len(rows) < 2:
        return rows
    person, ts = snap.person[rows], snap.ts[rows]
    same = (person[1:] == person[:-1]) & (ts[1:] == ts[:-1])
    if not same.any():
        return rows
    in_tie = np.zeros(len(rows), dtype=bool)
    in_tie[1:] |= same
    in_tie[:-1] |= same
    at = np.flatnonzero(in_tie)
    starts = np.ones(len(at), dtype=bool)
    starts[1:] = ~same[at[1:] - 1]
    group = np.cumsum(starts)
    order = np.lexsort((tie[at], group))  # stable: message_id order stays among equals
    out = rows.copy()
    out[at] = rows[at][order]
    return out


def funnel_table(snap: Snapshot, definition: FunnelDefinition) -> pa.Table | None:
    """The rows of :func:`~seamline.analytics.query.funnel_query`, or None when the
    definition needs something the snapshot does not hold (property filters)."""
    fields = [name for step in definition.steps for name in step.where]
    fields += list(definition.segment)
    if definition.by is not None:
        fields.append(definition.by)
    if not snap.answers(fields):
        return None
    k = len(definition.steps)
    events = snap.codes["event"]
    if definition.strict:  # strict funnels need every event, to see what interrupts
        rows = snap.date_rows(definition.dates)
    else:  # rows of a step's or an exclusion's event (step filters apply below)
        named = [step.event for step in definition.steps]
        named += [x.event for x in definition.exclusions]
        rows = np.flatnonzero(snap.lookup("event", named)[events])
        rows = snap.date_rows(definition.dates, rows)
    if rows is None:
        rows = np.arange(len(snap), dtype=np.int64)
    for name, value in definition.segment.items():
        rows = rows[snap.equals(name, value, rows)]
    event = events[rows]
    flags = []
    for step in definition.steps:
        flag = event == snap.code("event", step.event)
        for name, value in step.where.items():
            flag &= snap.equals(name, value, rows)
        flags.append(flag)
    if not definition.strict and any(step.where for step in definition.steps):
        relevant = np.zeros(len(rows), dtype=bool)  # a step's event failing its filter
        for flag in flags:
            relevant |= flag
        for x in definition.exclusions:
            relevant |= event == snap.code("event", x.event)
        rows, event, flags = rows[relevant], event[relevant], [f[relevant] for f in flags]
    tie = np.full(len(rows), k, dtype=np.int64)
    for i in reversed(range(k)):
        tie[flags[i]] = i
    order = _ties_in_order(snap, rows, tie)
    if order is not rows:  # some same-timestamp rows moved: reorder everything with them
        moved = _reorder(rows, order)
        rows, event, tie = order, event[moved], tie[moved]
        flags = [f[moved] for f in flags]
    columns: dict[str, Any] = {"person": snap.person_column(rows), "ts": snap.ts[rows]}
    for i, flag in enumerate(flags):
        columns[f"s{i}"] = flag
    for i, x in enumerate(definition.exclusions):
        columns[f"x{i}"] = event == snap.code("event", x.event)
    if definition.by is not None:
        columns["breakdown"] = snap.column(definition.by, rows)
    columns["tie"] = tie
    return pa.table(columns)


def _reorder(rows: NDArray[np.int64], order: NDArray[np.int64]) -> NDArray[np.int64]:
    """Positions in ``rows`` of each element of ``order`` (a permutation of ``rows``)."""
    return np.searchsorted(rows, order)


def sequence_table(snap: Snapshot, dates: DateRange, include_identify: bool,
                   node_field: str) -> pa.Table | None:  # fmt: skip
    """The rows of :func:`~seamline.analytics.query.sequence_query`."""
    if not snap.answers([node_field]):
        return None
    rows = snap.date_rows(dates, None if include_identify else snap.touchpoint_rows())
    if rows is not None and len(rows) == len(snap):
        rows = None  # every row: the arrays themselves, no copy
    labels, names = snap.label()
    return pa.table({
        "person": snap.person_column(rows), "ts": snap.ts if rows is None else snap.ts[rows],
        "event": _dictionary(labels, names, rows), "lane": snap.column(node_field, rows),
    })  # fmt: skip


def _event_in(snap: Snapshot, names: tuple[str, ...] | str | None) -> NDArray[np.bool_]:
    if names is None:
        return np.ones(len(snap), dtype=bool)
    return snap.isin("event", (names,) if isinstance(names, str) else names)


def retention_table(snap: Snapshot, start_event: str | None, return_event: str | None,
                    dates: DateRange) -> pa.Table:  # fmt: skip
    """The rows of :func:`~seamline.analytics.query.retention_query`."""
    is_start, is_return = _event_in(snap, start_event), _event_in(snap, return_event)
    rows = snap.date_rows(dates, snap.touchpoint_rows())
    assert rows is not None
    if start_event is not None and return_event is not None:
        rows = rows[is_start[rows] | is_return[rows]]
    return pa.table({"person": snap.person_column(rows), "ts": snap.ts[rows],
                     "is_start": is_start[rows], "is_return": is_return[rows]})  # fmt: skip


def outcome_table(snap: Snapshot, outcomes: tuple[str, ...], costly_events: tuple[str, ...],
                  costly_channels: tuple[str, ...], dates: DateRange) -> pa.Table:  # fmt: skip
    """The rows of :func:`~seamline.analytics.query.outcome_query`."""
    is_costly = _event_in(snap, costly_events)
    if costly_channels:
        in_channel = snap.isin("channel", costly_channels)
        is_costly = in_channel if not costly_events else is_costly | in_channel
    rows = snap.date_rows(dates, snap.touchpoint_rows())
    assert rows is not None
    return pa.table({"person": snap.person_column(rows), "ts": snap.ts[rows],
                     "is_outcome": _event_in(snap, outcomes)[rows],
                     "is_costly": is_costly[rows]})  # fmt: skip


# -- one snapshot per process ------------------------------------------------------------------
class SnapshotHolder:
    """The snapshot of the current data version, built on first use (one build at a time).

    ``fetch`` returns the sorted, coded rows (the store's
    :func:`~seamline.store.sequence_fetch.fetch_sequences`); ``version_of`` is the
    writer's data version. The version is read *before* the build, so a commit that lands
    during it makes the new snapshot stale at once instead of hiding the commit. A stale
    snapshot is dropped before the next one is built (one in memory at a time).
    """

    def __init__(self, fetch: Callable[[tuple[str, ...]], Any], version_of: Callable[[], int],
                 enabled: bool = True):  # fmt: skip
        self.fetch = fetch
        self.version_of = version_of
        self.enabled = enabled
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self.builds = 0

    def current(self) -> Snapshot | None:
        """The snapshot of the current data version, if one is built (never builds)."""
        snap = self._snapshot
        return snap if snap is not None and snap.version == self.version_of() else None

    def get(self) -> Snapshot | None:
        """The snapshot of the current data version, built now if needed; None if off."""
        if not self.enabled:
            return None
        found = self.current()
        if found is not None:
            return found
        with self._lock:  # one build at a time; later callers use the one just built
            version = self.version_of()
            snap = self._snapshot
            if snap is not None and snap.version == version:
                return snap
            self._snapshot = None  # free the stale one before building
            started = time.perf_counter()
            fetched = self.fetch(COLUMNS)
            snap = Snapshot.build(version, fetched)
            snap.build_seconds = time.perf_counter() - started
            self._snapshot = snap
            self.builds += 1
            return snap

    def clear(self) -> None:
        with self._lock:
            self._snapshot = None
