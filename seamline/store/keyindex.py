"""An in-memory index of the events already stored, so most groups skip DuckDB's conflict path.

Dedupe is DuckDB's: ``events.dedup_key`` (``md5_number(source_id || chr(0) || message_id)``)
is the primary key. But ``INSERT … ON CONFLICT DO NOTHING`` costs more the larger the table
(on the ingest bench's rows, per event: 2.7 µs at 200,000 stored events, 4.9 at 1 million,
10 at 3 million), while a plain ``INSERT`` into the same table stays near 8 µs however large
it gets. Almost no group holds a duplicate (they come from retries), so the writer asks this
index first: a group whose keys are all absent from it takes the plain ``INSERT``; a group
with any key present takes ``ON CONFLICT``.

The index holds the low 64 bits of every stored ``dedup_key``: 8 bytes an event, loaded
from the table when the writer starts and added to after every commit. It is never the
last word: a key missing from it (stored by another path) only makes the plain ``INSERT``
fail on the primary key, and the writer then rolls back and commits the group again with
``ON CONFLICT``; a key present in it but not stored (deleted since, or a 64-bit collision)
only sends its group down the conflict path.

It is a log-structured set: sorted ``uint64`` arrays whose sizes at least double from the
newest to the oldest, so each added key is copied O(log n) times, and a lookup is one
vectorised binary search per array. With 10 million keys (the 10M-event benchmark world)
it loads in about 0.5 s, and looking up and adding a group's keys costs about 1.1 µs a key,
mostly cache misses in the largest array; about 0.5 µs while it grows from empty to 3M.

    >>> index = StoredKeyIndex()
    >>> keys = fingerprints(["src", "src"], ["m1", "m2"])
    >>> index.any_stored(keys)
    False
    >>> index.add(keys[:1])
    >>> index.any_stored(keys), index.any_stored(keys[1:]), len(index)
    (True, False, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter

import duckdb
import numpy as np
import numpy.typing as npt

# np.unique is slow on large arrays with NumPy 2.3+ (a hash table): sort instead
from seamline.analytics.sequences import distinct
from seamline.events.keys import key_digests

Fingerprints = npt.NDArray[np.uint64]

#: the low 64 bits of the events' dedup key, as DuckDB computes it
LOAD_SQL = "SELECT (dedup_key & 18446744073709551615::UHUGEINT)::UBIGINT FROM events"


def fingerprints(source_ids: Sequence[str], message_ids: Sequence[str]) -> Fingerprints:
    """The low 64 bits of ``md5_number(source_id || chr(0) || message_id)`` per event.

    DuckDB's ``md5_number`` reads the 16-byte digest as a little-endian integer, so its low
    64 bits are the digest's first 8 bytes, little-endian: what
    :func:`seamline.events.keys.key_digests` computes, here for each run of events of one
    source. (About 0.65 µs an event.)
    """
    pairs = zip(source_ids, message_ids, strict=True)
    return from_digests(b"".join(key_digests(source, [message for _, message in run])
                                 for source, run in groupby(pairs, key=itemgetter(0))))


def from_digests(digests: bytes) -> Fingerprints:
    """Fingerprints from :func:`seamline.events.keys.key_digests` (8 bytes each)."""
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


class StoredKeyIndex:
    """The fingerprints of the stored events (see the module's doc)."""

    def __init__(self, stored: Fingerprints | None = None):
        # sorted, de-duplicated arrays; each at least twice the size of the next
        self._runs: list[Fingerprints] = []
        if stored is not None and len(stored):
            self._runs.append(distinct(stored))

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    @property
    def nbytes(self) -> int:
        return sum(run.nbytes for run in self._runs)

    def any_stored(self, keys: Fingerprints) -> bool:
        """Whether any of ``keys`` may be stored already."""
        if not len(keys):
            return False
        # sorted needles: NumPy's binary search starts each from where the last ended,
        # which halves the cache misses in a run of millions (0.55 against 1.2 µs a key)
        keys = np.sort(keys)
        for run in self._runs:
            at = np.searchsorted(run, keys)
            at[at == len(run)] = 0  # past the end: compare with any element, it differs
            if bool((run[at] == keys).any()):
                return True
        return False

    def add(self, keys: Fingerprints) -> None:
        """Remember ``keys`` as stored (call after the commit that stored them)."""
        if not len(keys):
            return
        run = distinct(keys)
        runs = self._runs
        while runs and len(runs[-1]) <= 2 * len(run):
            run = distinct(np.concatenate((runs.pop(), run)), runs=True)
        runs.append(run)


def load_index(con: duckdb.DuckDBPyConnection) -> StoredKeyIndex:
    """The index of every event stored in the workspace (one scan of ``dedup_key``)."""
    column = con.execute(LOAD_SQL).fetchnumpy()
    values = next(iter(column.values()))
    return StoredKeyIndex(np.asarray(values, dtype=np.uint64))
