"""Every analysis as *partial* -> *merge* -> *finish*, so an engine can run it where the rows are.

A kernel's ``partial`` takes rows of whole persons sorted by (person, time) and returns a
small, picklable summary (counts per edge, step or candidate; the gap or duration values an
exact quantile needs); ``merge`` combines the summaries of disjoint sets of persons;
``finish`` turns the merged summary into the result. The DuckDB workspace runs
``finish(partial(all rows))``; the Spark engine runs ``partial`` on every partition of
persons (on the executors), ``merge`` on the driver, then ``finish``
(:mod:`seamline.store.spark_kernels`). Both use the same code.

Text columns are coded per input (:func:`~seamline.analytics.sequences.dictionary`); a
partial's codes index the value list it carries. Partials that are merged must share that
list: a distributed engine codes every partition against one dictionary per column
(:func:`encode`), computed once over the query's rows.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seamline.analytics.result import Result
from seamline.analytics.sequences import (
    KernelInput,
    SequenceArrays,
    _combined,
    bool_column,
    from_table,
    person_codes,
)

#: Rows gathered (whole persons) before a partition computes a partial: the kernels chunk
#: them further (:data:`~seamline.analytics.sequences.CHUNK_ROWS`).
SEGMENT_ROWS = 1 << 19


@dataclass(frozen=True)
class KernelPlan:
    """An analysis over sorted per-person rows, split so the partials can be computed apart.

    ``text`` are the query's text columns the kernel codes (a distributed engine codes them
    against one shared dictionary), ``flags`` its boolean columns, ``keep_ids`` whether it
    needs person ids. ``partial`` and ``merge`` must pickle (module-level functions,
    optionally bound with :func:`functools.partial`): they run on Spark's executors.
    """

    partial: Callable[[KernelInput], Any]
    merge: Callable[[list[Any]], Any]
    finish: Callable[[Any], Result]
    text: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    keep_ids: bool = False

    def run(self, table: KernelInput) -> Result:
        """The whole analysis over one input (the DuckDB path): one partial, finished."""
        return self.finish(self.partial(table))

    def finish_partials(self, parts: list[Any], names: dict[str, list[str | None]]) -> Result:
        """The partials of every partition merged and finished; none (no rows anywhere):
        the partial of nothing, coded against ``names``."""
        if not parts:
            parts = [self.partial(encode(None, self.text, self.flags, names,
                                         keep_ids=self.keep_ids))]  # fmt: skip
        return self.finish(self.merge(parts))


def value_list(values: Iterable[str | None]) -> list[str | None]:
    """A text column's shared dictionary: its distinct values sorted, then None (the code
    of nulls), as :func:`encode` takes it."""
    return [*sorted({value for value in values if value is not None}), None]


def same_names(parts: Sequence[Any], *fields: str) -> None:
    """Partials merged together must code text against the same value lists."""
    for part in parts[1:]:
        for name in fields:
            if getattr(part, name) != getattr(parts[0], name):
                raise ValueError(f"partials coded against different '{name}' dictionaries")


_STALE = re.compile(r"values of '(\w+)' are not in its dictionary")


def stale_column(message: str) -> str | None:
    """The column named by :func:`encode`'s error for values missing from a dictionary,
    found in ``message`` (an engine's report of it), else None."""
    found = _STALE.search(message)
    return found.group(1) if found else None


def encode(table: pa.Table | None, text: tuple[str, ...], flags: tuple[str, ...],
           dictionaries: dict[str, list[str | None]], *,
           keep_ids: bool = False) -> SequenceArrays:  # fmt: skip
    """Rows sorted by (person, time) as kernel input, each text column coded against the
    given value list (its last value None: the code of nulls) instead of its own values, so
    partials of different row sets agree on codes. ``None``: no rows."""
    if table is None or table.num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return SequenceArrays(
            empty, empty, pa.array([], type=pa.string()) if keep_ids else None,
            {name: (empty, dictionaries[name]) for name in text},
            {name: np.zeros(0, dtype=bool) for name in flags},
        )  # fmt: skip
    seq = from_table(table, keep_ids=keep_ids)
    ids = pa.array(list(seq.person_ids), type=pa.string()) if keep_ids else None
    coded: dict[str, tuple[Any, list[str | None]]] = {}
    for name in text:
        names = dictionaries[name]
        column = _combined(table.column(name))
        values = pa.array(names[:-1], type=pa.string()).cast(column.type)
        found = pc.index_in(column, value_set=values)
        missing = found.null_count - column.null_count
        if missing:
            raise ValueError(f"{missing} values of '{name}' are not in its dictionary")
        codes = found.fill_null(len(names) - 1).to_numpy(zero_copy_only=False)
        coded[name] = (codes.astype(np.int64), names)
    return SequenceArrays(seq.person, seq.ts, ids, coded,
                          {name: bool_column(table, name) for name in flags})  # fmt: skip


# -- on an executor (Spark's ``mapInArrow``): imports only seamline's analytics, NumPy, PyArrow
def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """UTC-zoned timestamps as naive UTC, as the kernels take them."""
    fields = [pa.field(f.name, pa.timestamp(f.type.unit), f.nullable)
              if pa.types.is_timestamp(f.type) and f.type.tz is not None else f
              for f in batch.schema]  # fmt: skip
    schema = pa.schema(fields)
    return batch.cast(schema) if schema != batch.schema else batch


def _person_start(column: pa.ChunkedArray) -> int:
    """Where the last person's rows begin in a column sorted by person."""
    codes = person_codes(column)
    return int(np.searchsorted(codes, codes[-1], side="left"))


def partition_partials(batches: Iterator[pa.RecordBatch], *, partial: Callable[[Any], Any],
                       merge: Callable[[list[Any]], Any], text: tuple[str, ...],
                       flags: tuple[str, ...], keep_ids: bool,
                       names: dict[str, list[str | None]],
                       segment_rows: int = SEGMENT_ROWS) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """``mapInArrow``'s function: one partition's rows (whole persons, sorted) -> one row
    holding its pickled partial (none for an empty partition)."""
    parts: list[Any] = []
    pending: list[pa.RecordBatch] = []
    rows = 0

    def add(table: pa.Table | None) -> None:
        parts.append(partial(encode(table, text, flags, names, keep_ids=keep_ids)))

    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(_plain(batch))
        rows += batch.num_rows
        if rows < segment_rows:
            continue
        table = pa.Table.from_batches(pending)
        cut = _person_start(table.column("person"))  # the last person may go on
        if cut == 0:
            continue  # one person so far: keep gathering
        add(table.slice(0, cut))
        rest = table.slice(cut)
        pending, rows = rest.to_batches(), rest.num_rows
    if pending:
        add(pa.Table.from_batches(pending))
    if parts:
        data = pickle.dumps(merge(parts), protocol=pickle.HIGHEST_PROTOCOL)
        yield pa.RecordBatch.from_arrays([pa.array([data], type=pa.binary())], ["partial"])
