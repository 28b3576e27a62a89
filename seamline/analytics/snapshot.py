"""The sequence snapshot: every event with a person, sorted once per data version.

The analytics queries of :mod:`seamline.analytics.query` each ask the engine for the
events of persons sorted by (person id, time, message_id); on a big workspace that sort
of text keys is most of an analysis' time. A :class:`Snapshot` holds the same rows sorted
once, as integer arrays (person number in person-id order, microseconds, and a dictionary
code per text column), so an analysis the snapshot can answer (event-name steps,
dimension filters and breakdowns, date ranges) hands the kernel the same rows the SQL path
would have, in the same order, with the same values: as Arrow dictionary arrays
(retention, outcomes), or as :class:`~seamline.analytics.sequences.SequenceArrays` over
the snapshot's own arrays (funnels, journeys, seams, paths), whose rows and derived codes
(labels, step bits) are gathered chunk by chunk as the kernel counts. Anything else
(property filters such as ``properties.plan``) keeps the SQL path.

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
from seamline.analytics.sequences import SequenceArrays, tie_groups

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
    ties: bool = True  # whether any two rows share (person, ts) (set by build)
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
        snap.ties = tie_groups(snap.person, snap.ts) is not None
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

    def names(self, column: str) -> list[str | None]:
        """A column's values as a list, code -> value (the last is None: nulls)."""
        key = ("names", column)
        found = self._cache.get(key)
        if found is None:
            found = self.values[column].to_pylist()
            with self._lock:
                self._cache[key] = found
        return list(found)

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

    def label(self) -> tuple[LabelCodes, list[str | None]]:
        """``coalesce(event, type)`` as codes into its own list of names (the last: None),
        derived from the event and type codes when indexed (no 4-byte column per row)."""
        found = self._cache.get("label")
        if found is None:
            events = self.names("event")[:-1]  # without the null slot
            types = self.names("type")[:-1]
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
            found = (LabelCodes(self.codes["event"], self.codes["type"], len(events),
                                type_to_label), names)  # fmt: skip
            with self._lock:
                self._cache["label"] = found
        return found[0], list(found[1])

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


class LabelCodes:
    """The label code of rows (their event's code, else their type's label code), computed
    for the rows asked: ``codes[rows]``."""

    def __init__(self, events: NDArray[np.int32], types: NDArray[np.int32], n_events: int,
                 type_to_label: NDArray[np.int32]):  # fmt: skip
        self.events, self.types = events, types
        self.n_events, self.type_to_label = n_events, type_to_label

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, rows: Any) -> NDArray[np.int32]:
        events = self.events[rows]
        named = events < self.n_events
        if named.all():
            return events
        return np.where(named, events, self.type_to_label[self.types[rows]])


def _dictionary(codes: NDArray[np.int32], values: pa.Array, rows: NDArray[np.int64] | None
                ) -> pa.DictionaryArray:  # fmt: skip
    return pa.DictionaryArray.from_arrays(pa.array(codes if rows is None else codes[rows]),
                                          values)  # fmt: skip


def _micros(moment: datetime) -> int:
    return (moment.replace(tzinfo=None) - _EPOCH) // _MICROSECOND


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1) - _EPOCH


# -- inputs for the kernels ---------------------------------------------------------------
class RowTest:
    """Whether rows pass every test (a column's code in a set of codes): ``test[rows]``,
    computed for the rows asked (a chunk at a time) rather than for every row up front."""

    def __init__(self, tests: list[tuple[NDArray[np.int32], NDArray[np.bool_]]], length: int):
        self.tests, self.length = tests, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, rows: Any) -> NDArray[np.bool_]:
        if not self.tests:
            return np.zeros(len(np.arange(self.length)[rows]), dtype=bool)
        codes, wanted = self.tests[0]
        out = wanted[codes[rows]]
        for codes, wanted in self.tests[1:]:
            out &= wanted[codes[rows]]
        return out


class StepMask:
    """Per row, a bit per funnel step (then per exclusion) whose event and filters the row
    matches: ``mask[rows]``, computed for the rows asked (a chunk at a time)."""

    def __init__(self, events: NDArray[np.int32], by_event: NDArray[Any],
                 filters: list[tuple[int, list[tuple[NDArray[np.int32], NDArray[np.bool_]]]]]):
        self.events, self.by_event, self.filters = events, by_event, filters

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, rows: Any) -> NDArray[Any]:
        mask = self.by_event[self.events[rows]]
        for bit, tests in self.filters:  # a step's filters: its bit only where they hold
            failed = np.zeros(len(mask), dtype=bool)
            for codes, wanted in tests:
                failed |= ~wanted[codes[rows]]
            mask[failed] &= ~mask.dtype.type(bit)
        return mask


def _step_mask(snap: Snapshot, definition: FunnelDefinition) -> StepMask | None:
    """The steps' and exclusions' bits (None: more than 64 of them)."""
    named = [(step.event, step.where) for step in definition.steps]
    named += [(x.event, {}) for x in definition.exclusions]
    if len(named) > 64:
        return None
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                 if np.iinfo(t).bits >= len(named))  # fmt: skip
    by_event = np.zeros(len(snap.values["event"]), dtype=dtype)
    filters = []
    for i, (event, where) in enumerate(named):
        code = snap.code("event", event)
        if code >= 0:
            by_event[code] |= dtype(1 << i)
        if where:
            filters.append((1 << i, [(snap.codes[name], snap.lookup(name, [str(value)]))
                                     for name, value in where.items()]))  # fmt: skip
    return StepMask(snap.codes["event"], by_event, filters)


def funnel_table(snap: Snapshot, definition: FunnelDefinition) -> SequenceArrays | None:
    """The rows of :func:`~seamline.analytics.query.funnel_query` as the snapshot's arrays
    (every row in the date range and segment: rows of no step or exclusion carry no flag,
    so a funnel that is not strict ignores them), or None when the definition needs
    something the snapshot does not hold (property filters). The kernel puts
    same-timestamp rows in step order, as the query's ORDER BY does."""
    fields = [name for step in definition.steps for name in step.where]
    fields += list(definition.segment)
    if definition.by is not None:
        fields.append(definition.by)
    if not snap.answers(fields):
        return None
    rows = snap.date_rows(definition.dates)
    if definition.segment:
        if rows is None:
            rows = np.arange(len(snap), dtype=np.int64)
        for name, value in definition.segment.items():
            rows = rows[snap.equals(name, value, rows)]
    events = snap.codes["event"]
    flags: dict[str, Any] = {}
    mask = _step_mask(snap, definition)
    if mask is not None:
        flags["steps"] = mask
    for i, step in enumerate(definition.steps if mask is None else ()):
        tests = [(events, snap.lookup("event", [step.event]))]
        tests += [(snap.codes[name], snap.lookup(name, [str(value)]))
                  for name, value in step.where.items()]  # fmt: skip
        flags[f"s{i}"] = RowTest(tests, len(snap))
    for i, x in enumerate(definition.exclusions if mask is None else ()):
        flags[f"x{i}"] = RowTest([(events, snap.lookup("event", [x.event]))], len(snap))
    text: dict[str, Any] = {}
    if definition.by is not None:
        text["breakdown"] = (snap.codes[definition.by], snap.names(definition.by))
    return SequenceArrays(snap.person, snap.ts, snap.person_ids, text, flags, rows=rows,
                          ties=snap.ties)  # fmt: skip


def sequence_table(snap: Snapshot, dates: DateRange, include_identify: bool,
                   node_field: str) -> SequenceArrays | None:  # fmt: skip
    """The rows of :func:`~seamline.analytics.query.sequence_query`, as the snapshot's
    arrays and the rows they are (gathered by the kernel, chunk by chunk)."""
    if not snap.answers([node_field]):
        return None
    rows = snap.date_rows(dates, None if include_identify else snap.touchpoint_rows())
    if rows is not None and len(rows) == len(snap):
        rows = None  # every row: the arrays themselves, no copy
    labels, names = snap.label()
    return SequenceArrays(
        snap.person, snap.ts, snap.person_ids,
        {"event": (labels, names), "lane": (snap.codes[node_field], snap.names(node_field))},
        rows=rows,
    )  # fmt: skip


def _take(values: NDArray[Any], rows: NDArray[np.int64] | None) -> NDArray[Any]:
    return values if rows is None else values[rows]


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
