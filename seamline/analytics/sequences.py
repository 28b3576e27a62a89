"""Sorted per-person event sequences as NumPy arrays: the input of every kernel."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

_Item = TypeVar("_Item", bound=np.generic)


@dataclass
class Sequences:
    """Rows sorted by (person, time). ``person`` is an ascending code (dense on the SQL
    path; int32 and not dense from a snapshot); ``ts`` is in microseconds."""

    person: NDArray[Any]
    ts: NDArray[np.int64]
    person_ids: list[str]  # code -> person id (only when asked for; a snapshot's: a view)

    def __len__(self) -> int:
        return len(self.person)


#: Rows per chunk of a chunked kernel: its temporaries (a few hundred KiB each) stay in the CPU's
#: cache and are reused by the allocator, instead of fresh 10M-element arrays per step.
CHUNK_ROWS = 1 << 16


class Codes(Protocol):
    """Integer codes that can be indexed by rows (an array, or codes derived per chunk)."""

    def __getitem__(self, rows: Any) -> NDArray[Any]: ...

    def __len__(self) -> int: ...


@dataclass
class SequenceArrays:
    """A kernel's input as NumPy arrays, in place of an Arrow table (what a
    :mod:`~seamline.analytics.snapshot` hands over: no Arrow table, no per-row objects).

    ``person`` ascends (codes, not necessarily dense); ``text`` maps a column to its codes
    and the values they index (the last value may be None: nulls); ``flags`` maps a column
    to booleans. With ``rows``, the arrays are a snapshot's whole columns and the input is
    those rows (ascending), gathered only when used: chunk by chunk (:meth:`chunks`), or
    all at once (:meth:`materialized`). :func:`from_table`, :func:`dictionary` and
    :func:`bool_column` read it as they read a table with the same columns.
    """

    person: NDArray[Any]
    ts: NDArray[np.int64]
    person_ids: pa.Array | None = None
    text: dict[str, tuple[Codes, list[str | None]]] = field(default_factory=dict)
    flags: dict[str, Codes] = field(default_factory=dict)
    rows: NDArray[np.int64] | None = None
    ties: bool = True  # False: no two rows share (person, ts), so no tie order to restore
    _full: SequenceArrays | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else len(self.person)

    def _take(self, index: Any) -> SequenceArrays:
        return SequenceArrays(
            self.person[index], self.ts[index], self.person_ids,
            {name: (np.asarray(codes[index]), names) for name, (codes, names)
             in self.text.items()},
            {name: np.asarray(flag[index]) for name, flag in self.flags.items()},
            ties=self.ties,
        )  # fmt: skip

    def materialized(self) -> SequenceArrays:
        """Every row gathered into plain arrays (kept: gathered once)."""
        if self._full is None:
            if self.rows is None and all(isinstance(c, np.ndarray) for c, _ in self.text.values()
                                         ) and all(isinstance(f, np.ndarray)
                                                   for f in self.flags.values()):  # fmt: skip
                self._full = self
            else:
                self._full = self._take(self.rows if self.rows is not None else slice(None))
        return self._full

    def chunks(self, size: int | None = None) -> Iterator[SequenceArrays]:
        """Consecutive pieces of about ``size`` rows (:data:`CHUNK_ROWS`), never splitting
        a person, each as plain arrays (views when there are no ``rows`` to gather)."""
        size = max(CHUNK_ROWS if size is None else size, 1)
        n = len(self)
        if n <= size:
            yield self.materialized()
            return
        lo = 0
        while lo < n:
            hi = self._person_end(min(lo + size, n) - 1)
            index = self.rows[lo:hi] if self.rows is not None else slice(lo, hi)
            yield self._take(index)
            lo = hi

    def _person_end(self, at: int) -> int:
        """The position just after the last row of the person of row ``at``."""
        if self.rows is None:
            return int(np.searchsorted(self.person, self.person[at], side="right"))
        end = int(np.searchsorted(self.person, self.person[self.rows[at]], side="right"))
        return int(np.searchsorted(self.rows, end))


def as_arrays(table: KernelInput, text: tuple[str, ...] = (), flags: tuple[str, ...] = (),
              *, keep_ids: bool = False) -> SequenceArrays:  # fmt: skip
    """A kernel input as :class:`SequenceArrays` (an Arrow table's columns converted)."""
    if isinstance(table, SequenceArrays):
        return table
    seq = from_table(table, keep_ids=keep_ids)
    ids = pa.array(list(seq.person_ids), type=pa.string()) if keep_ids else None
    return SequenceArrays(seq.person, seq.ts, ids,
                          {name: dictionary(table, name) for name in text},
                          {name: bool_column(table, name) for name in flags})  # fmt: skip


#: What a kernel takes: an Arrow table (the SQL path) or a snapshot's arrays.
KernelInput: TypeAlias = "pa.Table | SequenceArrays"


def tie_groups(person: NDArray[Any], ts: NDArray[np.int64]
               ) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:  # fmt: skip
    """Rows sorted by (person, ts) that share both with a neighbour, and a group number
    per such row (0, 1, ... ascending; one group per run of equal (person, ts)); None when
    no two rows tie."""
    if len(person) < 2:
        return None
    same = (person[1:] == person[:-1]) & (ts[1:] == ts[:-1])
    if not same.any():
        return None
    in_tie = np.zeros(len(person), dtype=bool)
    in_tie[1:] |= same
    in_tie[:-1] |= same
    rows = np.flatnonzero(in_tie)
    # a group starts at a tie row whose predecessor is not tied to it
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = ~same[rows[1:] - 1]
    return rows, np.cumsum(starts) - 1


def person_codes(column: pa.ChunkedArray | pa.Array) -> NDArray[np.int64]:
    """Dense codes for a column sorted by person: 0 for the first person, +1 at each change."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros(0, dtype=np.int64)
    changed = pc.not_equal(array.slice(1), array.slice(0, len(array) - 1))
    steps = np.concatenate(([0], changed.to_numpy(zero_copy_only=False).astype(np.int64)))
    return np.cumsum(steps)


class DictionaryIds(Sequence[str]):
    """Person ids of a dictionary-coded person column: code -> id, converted on access."""

    def __init__(self, values: pa.Array):
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, code: int) -> str:  # type: ignore[override]
        return str(self.values[int(code)].as_py())


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _timestamps(table: pa.Table) -> NDArray[np.int64]:
    column = _combined(table.column("ts"))
    if not pa.types.is_int64(column.type):  # the SQL path: TIMESTAMP; snapshots: int64 us
        column = column.cast(pa.timestamp("us")).cast(pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def from_table(table: KernelInput, *, keep_ids: bool = False) -> Sequences:
    """The person codes and times of a kernel input. ``person`` is either the person ids
    in sorted order (the SQL path: codes are numbered here, 0, 1, ...) or a dictionary
    array (a :mod:`~seamline.analytics.snapshot`: codes are its indices, ascending but
    not dense, and ids its dictionary); :class:`SequenceArrays` carry those codes."""
    if isinstance(table, SequenceArrays):
        ids = []
        if keep_ids and table.person_ids is not None:
            ids = cast(list[str], DictionaryIds(table.person_ids))
        full = table.materialized()
        return Sequences(full.person, full.ts, ids)
    person = _combined(table.column("person"))
    if isinstance(person, pa.DictionaryArray):
        codes = np.asarray(person.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        # indexed like a list of ids, without converting 1.7M of them up front
        ids = cast(list[str], DictionaryIds(person.dictionary)) if keep_ids else []
        return Sequences(codes, _timestamps(table), ids)
    codes = person_codes(person)
    ts = _timestamps(table)
    ids = []
    if keep_ids and len(codes):
        starts = np.flatnonzero(np.concatenate(([True], np.diff(codes) != 0)))
        ids = person.take(pa.array(starts)).to_pylist()
    return Sequences(codes, ts.astype(np.int64), ids)


def bool_column(table: KernelInput, name: str) -> NDArray[np.bool_]:
    if isinstance(table, SequenceArrays):
        return np.asarray(table.materialized().flags[name])
    column = table.column(name).fill_null(False)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)


def dictionary(table: KernelInput, name: str) -> tuple[NDArray[Any], list[str | None]]:
    """Integer codes and their values for a text column (nulls get a code too)."""
    if isinstance(table, SequenceArrays):
        codes, names = table.materialized().text[name]
        return np.asarray(codes), names
    column = _combined(table.column(name))
    if isinstance(column, pa.DictionaryArray) and column.null_count == 0:  # a snapshot's
        listed: list[str | None] = column.dictionary.to_pylist()
        return column.indices.to_numpy().astype(np.int64), [*listed, None]
    encoded = column.dictionary_encode()
    indices = encoded.indices.fill_null(len(encoded.dictionary))
    values: list[str | None] = [*encoded.dictionary.to_pylist(), None]
    return indices.to_numpy(zero_copy_only=False).astype(np.int64), values


def distinct(values: NDArray[_Item], *, runs: bool = False) -> NDArray[_Item]:
    """Sorted distinct values, like ``np.unique(values)`` but by sorting.

    NumPy 2.3+ answers a bare ``np.unique`` from a hash table, which is ~50x slower than a
    sort on a million int64 codes (0.8 s against 17 ms on the benchmark machine; 10 s against
    0.2 s on ten million uint64 keys, see :mod:`seamline.store.keyindex`). ``runs`` says
    ``values`` are a few sorted runs end to end: a stable sort (timsort) then merges them in
    linear time.
    """
    ordered = np.sort(values, kind="stable" if runs else None)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
