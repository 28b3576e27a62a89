"""The writer's stored-key index: exact against a set, equal to DuckDB's dedup key, and never
the last word on dedupe (a key it does not know still meets the primary key)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from seamline.events import EventRows, IngestContext, normalise_events
from seamline.events.keys import key_digests
from seamline.store import Store, Writer
from seamline.store.keyindex import StoredKeyIndex, fingerprints, from_digests, load_index

_KEYS = st.lists(st.integers(min_value=0, max_value=60), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KEYS, _KEYS), max_size=30))
def test_the_index_answers_like_a_set(steps: list[tuple[list[int], list[int]]]) -> None:
    """Small values on purpose: runs then overlap, repeat and merge often."""
    index, stored = StoredKeyIndex(), set()
    for added, asked in steps:
        for value in asked:
            probe = np.array([value], dtype=np.uint64)
            assert index.any_stored(probe) == (value in stored)
        batch = np.array(asked, dtype=np.uint64)
        assert index.any_stored(batch) == bool(stored.intersection(asked))
        index.add(np.array(added, dtype=np.uint64))
        stored.update(added)
        assert len(index) >= len(stored)  # a value in two runs is counted twice, never lost
    sizes = [len(run) for run in index._runs]
    assert all(older > 2 * newer for older, newer in itertools.pairwise(sizes))


def test_a_large_index_stays_a_few_runs() -> None:
    rng = np.random.default_rng(7)
    index = StoredKeyIndex(rng.integers(0, 2**63, 100_000, dtype=np.uint64))
    added = [rng.integers(0, 2**63, 2_800, dtype=np.uint64) for _ in range(200)]
    for keys in added:
        index.add(keys)
    assert len(index) == 100_000 + 200 * 2_800  # no collisions at these sizes
    assert len(index._runs) <= 12
    assert all(index.any_stored(keys[k : k + 1]) for keys in added[::37] for k in (0, 1_234))
    fresh = rng.integers(0, 2**63, 2_800, dtype=np.uint64)
    assert not index.any_stored(fresh)
    assert index.nbytes == 8 * len(index)


def _rows(source_id: str, message_ids: list[str]) -> EventRows:
    at = datetime(2026, 11, 24, 12, tzinfo=UTC)
    ctx = IngestContext(source_id=source_id, channel="mobile", unit=None, received_at=at,
                        keep_timestamps=True)  # fmt: skip
    events = [{"type": "track", "event": "Opened", "userId": f"u{k % 3}", "messageId": m,
               "timestamp": "2026-11-24T11:00:00Z"} for k, m in enumerate(message_ids)]  # fmt: skip
    rows, failed = normalise_events(events, ctx)
    assert not failed
    return rows


def test_fingerprints_are_the_low_bits_of_the_stored_dedup_key(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    writer = Writer(store).start()
    try:
        ids = [f"m-{k}" for k in range(50)] + ["ünïcode-✓", "with\x00nul", ""]
        ids = [i for i in ids if i]  # an empty messageId is replaced at ingest
        writer.submit(_rows("src-a", ids), []).result(timeout=30)
        loaded = load_index(writer._con)
        assert len(loaded) == len(ids)
        ours = fingerprints(["src-a"] * len(ids), ids)
        assert sorted(ours.tolist()) == loaded._runs[0].tolist()
        # the source is part of the key: the same ids from another source are new
        assert not loaded.any_stored(fingerprints(["src-b"] * len(ids), ids))
        # what a parse worker computes for a source it knows is the same
        assert from_digests(key_digests("src-a", ids)).tolist() == ours.tolist()
        # and a group that comes with its digests is indexed by them
        more = [f"n-{k}" for k in range(20)]
        writer.submit(_rows("src-a", more), [], digests=key_digests("src-a", more)).result(30)
        assert writer.stored_keys.any_stored(fingerprints(["src-a"], ["n-7"]))
        assert len(load_index(writer._con)) == len(ids) + len(more)
    finally:
        writer.stop()
        store.close()


def test_duplicates_take_the_conflict_path_and_unknown_keys_are_still_refused(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path)
    writer = Writer(store).start()
    try:
        first = writer.submit(_rows("src", ["a1", "a2", "a3"]), []).result(timeout=30)
        assert (first.stored, first.duplicates) == (3, 0)
        assert writer.profile.conflict_path == 0  # all new: the plain insert

        # a retry: the index knows the keys, the group goes through ON CONFLICT
        again = writer.submit(_rows("src", ["a2", "a3", "a4"]), []).result(timeout=30)
        assert (again.stored, again.duplicates) == (1, 2)
        assert (writer.profile.conflict_path, writer.profile.index_misses) == (1, 0)

        # an event stored behind the index's back (as another path could): the plain
        # insert meets the primary key, and the group is committed again, carefully
        def sneak(con: object) -> None:
            rows = _rows("src", ["b1"])
            rows.columns["person_id"] = ["p-sneaked"]
            Store.append_events(con, rows, [], {})  # type: ignore[arg-type]

        writer.call(sneak).result(timeout=30)
        assert not writer.stored_keys.any_stored(fingerprints(["src"], ["b1"]))
        mixed = writer.submit(_rows("src", ["b1", "b2"]), []).result(timeout=30)
        assert (mixed.stored, mixed.duplicates) == (1, 1)
        assert writer.profile.index_misses == 1
        assert writer.stored_keys.any_stored(fingerprints(["src"], ["b1"]))

        counted = writer.call(lambda con: con.execute(  # type: ignore[attr-defined]
            "SELECT count(*), count(DISTINCT message_id) FROM events").fetchone()).result()
        assert counted == (6, 6)  # a1-a4, b1, b2: each once
    finally:
        writer.stop()
        store.close()

    # a new writer loads what the file holds: a resend is a duplicate, not a miss
    store = Store.open(tmp_path)
    writer = Writer(store).start()
    try:
        assert len(writer.stored_keys) == 6
        resent = writer.submit(_rows("src", ["a1", "b2", "c1"]), []).result(timeout=30)
        assert (resent.stored, resent.duplicates) == (1, 2)
        assert (writer.profile.conflict_path, writer.profile.index_misses) == (1, 0)
    finally:
        writer.stop()
        store.close()
