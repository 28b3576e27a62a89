"""Every resolved event with a person, sorted as the analytics queries sort them, as
NumPy arrays of integer codes: the DuckDB half of the sequence snapshot
(:mod:`seamline.analytics.snapshot`).

The analytics queries order ``events_resolved`` by (person id text, timestamp,
message_id); sorting ten million rows by a text key is most of their time. Here DuckDB
sorts only the ~2M distinct person ids (to number them in text order), then sorts the rows
by (person number, microseconds), both integers. Rows with the same person and timestamp
are put in message_id order afterwards, only inside those (rare) tie groups. Text columns
come back as int32 codes into small sorted dictionaries (-1: null).

Persons are numbered from the ``persons`` table (every resolved id is one of its rows; if
one is not, the distinct resolved ids are numbered instead). Everything is read in one
transaction, so the codes, dictionaries and tie message ids
describe one consistent state of the database.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from seamline.analytics.sequences import tie_groups
from seamline.store.database import Store

#: The person of an event, as the ``events_resolved`` view defines it
#: (seamline/store/identity.py): overrides point merged persons at their survivor.
_RESOLVED = (
    "FROM events e LEFT JOIN person_overrides o ON o.old_person_id = e.person_id"
)
_PERSON = "coalesce(o.new_person_id, e.person_id)"


@dataclass
class FetchedSequences:
    """Rows sorted by (person, ts, message_id); codes index the dictionaries (-1: null)."""

    person: NDArray[np.int32]
    ts: NDArray[np.int64]  # microseconds since the epoch (UTC, naive as stored)
    person_ids: pa.Array  # code -> person id, in ascending text order
    columns: dict[str, NDArray[np.int32]]
    dictionaries: dict[str, pa.Array]  # column -> its distinct values (code -> value)

    @property
    def nbytes(self) -> int:
        return int(self.person.nbytes + self.ts.nbytes + self.person_ids.nbytes
                   + sum(c.nbytes for c in self.columns.values())
                   + sum(d.nbytes for d in self.dictionaries.values()))  # fmt: skip


def fetch_sequences(store: Store, columns: tuple[str, ...]) -> FetchedSequences:
    """The sorted, coded rows of every event whose resolved person is not null.

    ``columns`` are plain text columns of ``events`` (``event``, ``type``, ``channel``...)
    or ``source`` (the source's name); callers check them against a fixed list.
    """
    with store.cursor() as cur:
        cur.execute("BEGIN TRANSACTION")
        try:
            try:
                return _fetch(cur, columns, "persons")
            except _Unnumbered:  # number the distinct resolved ids instead (slower)
                return _fetch(cur, columns, _DISTINCT_PERSONS)
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")  # read only: also drops the temp tables


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_DISTINCT_PERSONS = (
    f"(SELECT person_id FROM (SELECT DISTINCT {_PERSON} AS person_id {_RESOLVED}) "
    "WHERE person_id IS NOT NULL)"
)


def _fetch(cur: duckdb.DuckDBPyConnection, columns: tuple[str, ...],
           persons: str) -> FetchedSequences:  # fmt: skip
    # each text column comes back as an ENUM of its (few) distinct values, in value order:
    # DuckDB hands ENUMs to Arrow as dictionary arrays, so no string crosses over per row
    dictionaries: dict[str, pa.Array] = {}
    selected = []
    for i, column in enumerate(columns):
        # the source's name, as the analytics queries read it; else the column itself
        value = "s.name" if column == "source" else f"r.{column}"
        source = "sources" if column == "source" else "events"
        values = [row[0] for row in cur.execute(
            f"SELECT DISTINCT {'name' if column == 'source' else column} AS v FROM {source} "
            "WHERE v IS NOT NULL ORDER BY v").fetchall()]  # fmt: skip
        dictionaries[column] = pa.array(values, type=pa.string())
        if values:
            selected.append(f"{value}::ENUM({', '.join(map(_literal, values))}) AS c{i}")
        else:
            selected.append(f"NULL::INTEGER AS c{i}")
    needed = sorted({c for c in columns if c != "source"} | {"source_id"})
    # persons numbered in id text order: only the ~2M person ids are sorted as text, and
    # the 10M rows by (number, time); every resolved person id is a row of ``persons``
    # (checked below: a person missing there would come back without a number)
    query = (
        f"WITH r AS (SELECT {_PERSON} AS person, e.timestamp, e.rowid AS rid, "
        f"{', '.join(f'e.{c}' for c in needed)} {_RESOLVED}), "
        "p AS (SELECT person_id AS person, (row_number() OVER (ORDER BY person_id) - 1)"
        f"::INTEGER AS code FROM {persons}) "
        f"SELECT p.code AS person, epoch_us(r.timestamp) AS ts, r.rid, {', '.join(selected)} "
        "FROM r LEFT JOIN p ON p.person = r.person "
        + ("LEFT JOIN sources s ON s.source_id = r.source_id " if "source" in columns else "")
        + "WHERE r.person IS NOT NULL ORDER BY p.code, r.timestamp"
    )
    table = cur.sql(query).to_arrow_table()
    if table.column("person").null_count:  # an id outside ``persons``: number them all
        raise _Unnumbered
    person = _numpy(table, "person", np.int32)
    ts = _numpy(table, "ts", np.int64)
    order = _tie_order(cur, person, ts, _numpy(table, "rid", np.int64))
    if order is not None:
        person, ts = person[order], ts[order]
    coded = {}
    for i, column in enumerate(columns):
        codes = _codes(table.column(f"c{i}"))
        coded[column] = codes[order] if order is not None else codes
    del table
    ids = cur.sql(f"SELECT person_id FROM {persons} ORDER BY person_id").to_arrow_table()
    person_ids = ids.column("person_id").combine_chunks().cast(pa.string())
    return FetchedSequences(person, ts, person_ids, coded, dictionaries)


class _Unnumbered(Exception):
    pass


def _codes(column: pa.ChunkedArray) -> NDArray[np.int32]:
    """Dictionary (ENUM) indices as int32, -1 for null."""
    if column.num_chunks == 0 or len(column) == 0:
        return np.zeros(0, dtype=np.int32)
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.indices
    return np.asarray(array.cast(pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False),
                      dtype=np.int32)  # fmt: skip


def _numpy(table: pa.Table, name: str, dtype: type) -> NDArray:
    column = table.column(name)
    if len(column) == 0:
        return np.zeros(0, dtype=dtype)
    return np.asarray(column.combine_chunks().to_numpy(zero_copy_only=False), dtype=dtype)


def _tie_order(cur: duckdb.DuckDBPyConnection, person: NDArray[np.int32], ts: NDArray[np.int64],
               rid: NDArray[np.int64]) -> NDArray[np.int64] | None:  # fmt: skip
    """The permutation that puts rows of equal (person, ts) in message_id order, or None
    when there are no such ties."""
    found = tie_groups(person, ts)
    if found is None:
        return None
    rows, group = found
    ties = pa.table({"pos": rows, "rid": rid[rows]})
    cur.register("_seq_ties", ties)
    try:
        found = cur.sql("SELECT t.pos, e.message_id FROM _seq_ties t "
                        "JOIN events e ON e.rowid = t.rid").to_arrow_table()  # fmt: skip
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.unregister("_seq_ties")
    pos = found.column("pos").to_numpy()
    back = np.empty(len(person), dtype=np.int64)
    back[rows] = np.arange(len(rows))
    keyed = pa.table({"group": group[back[pos]], "message_id": found.column("message_id")})
    sorted_idx = pc.sort_indices(keyed, sort_keys=[("group", "ascending"),
                                                   ("message_id", "ascending")]).to_numpy()
    order = np.arange(len(person), dtype=np.int64)
    order[rows] = pos[sorted_idx]  # groups keep their slots; rows inside follow message_id
    return order
