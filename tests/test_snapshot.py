"""The sequence snapshot answers exactly as the SQL path, and never from stale data.

Random worlds (hypothesis): a handful of persons on few distinct minutes (so same-timestamp
ties are common), anonymous events later merged into known users (person overrides),
identify calls among the touchpoints, several channels, units, sources and app versions.
Every analysis is run twice on the same workspace: through the workspace (snapshot) and
through :class:`~seamline.analytics.runner.Analyses` on the bare store (the SQL queries).
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import seamline
from seamline.analytics import sequences
from seamline.analytics.runner import Analyses

T0 = datetime(2026, 11, 2, 9, 0)
END = T0 + timedelta(days=20)
EVENTS = ("A", "B", "C", "Call Started", "Order Completed")
SOURCES = (("app", "mobile", "retail"), ("web", "web", "retail"),
           ("calls", "call_center", "service"))  # fmt: skip

event_strategy = st.tuples(
    st.integers(0, 5),  # person
    st.sampled_from([0, 0, 1, 2, 60, 61, 1440, 1500, 4000, 10000]),  # minute: many ties
    st.sampled_from(EVENTS),
    st.sampled_from([0, 1, 2]),  # source
    st.sampled_from(["1.0", "2.0", None]),  # app version
    st.booleans(),  # anonymous (merged into the user later when a merge names it)
)
world_strategy = st.tuples(
    st.lists(event_strategy, min_size=1, max_size=40),
    st.lists(st.integers(0, 5), max_size=3),  # persons whose anonymous id gets merged
)


def build(data_dir: Path, events: list[tuple[Any, ...]], merges: list[int]) -> seamline.Workspace:
    ws = seamline.open(data_dir)
    for name, channel, unit in SOURCES:
        ws.add_source(name, channel, unit)
    batches: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in SOURCES}
    for n, (person, minute, event, source, version, anonymous) in enumerate(events):
        who = {"anonymousId": f"anon-{person}"} if anonymous else {"userId": f"user-{person}"}
        context = {"app": {"version": version}} if version else {}
        batches[SOURCES[source][0]].append({
            "type": "track", "event": event, "messageId": f"m{n:03d}",
            "timestamp": (T0 + timedelta(minutes=minute)).isoformat() + "Z",
            "context": context, **who,
        })  # fmt: skip
    for person in merges:  # links anon-P to user-P: two persons become one (an override)
        batches["web"].append({
            "type": "identify", "userId": f"user-{person}", "anonymousId": f"anon-{person}",
            "messageId": f"merge-{person}",
            "timestamp": (T0 + timedelta(minutes=2)).isoformat() + "Z",
        })  # fmt: skip
    for name, batch in batches.items():
        if batch:
            ws.import_events(name, batch)
    return ws


def analyses(target: Any) -> dict[str, Any]:
    """Every analysis under several options, as plain dicts."""
    window = {"end": END}
    out: dict[str, Any] = {}
    steps = ["A", "B", "C"]
    funnels = {
        "plain": {}, "by_version": {"by": "app_version"}, "by_channel_step2": {
            "by": "channel", "by_step": 2}, "by_source": {"by": "source"},
        "strict": {"strict": True}, "exclusion": {"exclude": ["Call Started"]},
        "segment": {"where": {"channel": "web"}}, "window": {"within": "1h"},
        "dates": {"start": T0 + timedelta(minutes=1), "end": T0 + timedelta(days=3)},
        "step_filter": {"by": "unit"},
    }  # fmt: skip
    for name, options in funnels.items():
        out[f"funnel-{name}"] = target.funnel(steps, **{**window, **options}).to_dict()
    out["funnel-where-step"] = target.funnel(["A", "B[channel=mobile]"], **window).to_dict()
    out["funnel-step-windows"] = target.funnel(steps, step_windows=[None, "1h"],
                                               **window).to_dict()  # fmt: skip
    for lane in ("channel", "unit"):
        out[f"journeys-{lane}"] = target.journeys(lane=lane, **window).to_dict()
    out["journeys-from"] = target.journeys(from_event="B", **window).to_dict()
    out["journeys-dates"] = target.journeys(start=T0 + timedelta(minutes=1),
                                            end=T0 + timedelta(days=1)).to_dict()  # fmt: skip
    for direction in ("after", "before"):
        out[f"paths-{direction}"] = target.paths("A", 2, direction, **window).to_dict()
    out["paths-collapse"] = target.paths("B", 3, collapse_repeats=True, **window).to_dict()
    out["retention"] = target.retention("A", "B", "day", 5, **window).to_dict()
    out["retention-any"] = target.retention(None, None, "week", 3, **window).to_dict()
    out["outcomes"] = target.outcomes("day", **window).to_dict()
    out["outcomes-named"] = target.outcomes("day", outcome=["C"], **window).to_dict()
    out["seams"] = target.seams("2h", 1, include_all=True, funnel=["A", "B"],
                                **window).to_dict()  # fmt: skip
    return out


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(world_strategy)
def test_snapshot_answers_as_the_sql_path(world: tuple[list[tuple[Any, ...]], list[int]]) -> None:
    events, merges = world
    with tempfile.TemporaryDirectory() as tmp:
        ws = build(Path(tmp) / "ws", events, merges)
        try:
            sql = Analyses(ws.store, ws.settings)  # the bare store: no snapshot, only SQL
            from_snapshot, from_sql = analyses(ws), analyses(sql)
            assert ws.snapshots.builds == 1  # one snapshot answered every analysis
            for name, expected in from_sql.items():
                assert from_snapshot[name] == expected, name
        finally:
            ws.close()


@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(world_strategy)
def test_chunked_kernels_answer_as_one_chunk(world: tuple[list[tuple[Any, ...]], list[int]]
                                             ) -> None:  # fmt: skip
    """The funnel, journey and seams kernels run chunk by chunk (a chunk never splits a
    person); with chunks of one to three rows they answer exactly as with one chunk, from
    the snapshot (rows gathered per chunk) and from the SQL path's tables (slices)."""
    events, merges = world
    with tempfile.TemporaryDirectory() as tmp:
        ws = build(Path(tmp) / "ws", events, merges)
        saved = sequences.CHUNK_ROWS
        try:
            sql = Analyses(ws.store, ws.settings)
            whole = analyses(sql)  # a few dozen rows: one chunk
            for size, target in ((3, ws), (1, sql), (2, ws)):
                sequences.CHUNK_ROWS = size
                chunked = analyses(target)
                for name, expected in whole.items():
                    assert chunked[name] == expected, (size, name)
        finally:
            sequences.CHUNK_ROWS = saved
            ws.close()


def test_chunks_never_split_a_person() -> None:
    person = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5, 7], dtype=np.int32)
    ts = np.arange(len(person), dtype=np.int64)
    whole = sequences.SequenceArrays(person, ts)
    pieces = [chunk.person.tolist() for chunk in whole.chunks(2)]
    assert pieces == [[0, 0, 0], [1, 2, 2], [5, 5, 5, 5], [7]]
    rows = np.array([1, 2, 4, 5, 7, 9, 10], dtype=np.int64)  # a snapshot's chosen rows
    chosen = sequences.SequenceArrays(person, ts, rows=rows)
    pieces = [chunk.ts.tolist() for chunk in chosen.chunks(1)]
    assert pieces == [[1, 2], [4, 5], [7, 9], [10]]
    assert np.concatenate(pieces).tolist() == rows.tolist()


def test_funnels_of_more_steps_than_mask_bits(tmp_path: Path) -> None:
    """Up to 64 steps and exclusions travel as one bit mask per row; more fall back to a
    flag per step, with the same answer as the SQL path."""
    events = [(0, m, "AB"[m % 2], 0, None, False) for m in range(70)]
    events += [(1, m, "AB"[m % 2], 1, None, False) for m in range(0, 70, 3)]
    with build(tmp_path / "ws", events, []) as ws:
        sql = Analyses(ws.store, ws.settings)
        for steps in (["A", "B"] * 20, ["A", "B"] * 33):
            expected = sql.funnel(steps, "1d", end=END, exclude=["C"]).to_dict()
            assert ws.funnel(steps, "1d", end=END, exclude=["C"]).to_dict() == expected
            assert expected["steps"][-1]["people"] == 1  # person 0 alternates 70 times


def test_merged_persons_and_ties_are_covered(tmp_path: Path) -> None:
    """The worlds above really contain overrides and same-timestamp ties."""
    events = [(0, 0, "A", 0, "1.0", True), (0, 0, "B", 1, None, False),
              (0, 0, "C", 0, "2.0", True), (1, 0, "A", 2, None, False)]  # fmt: skip
    with build(tmp_path / "ws", events, [0]) as ws:
        assert ws.store.query("SELECT count(*) FROM person_overrides")[0][0] == 1
        snap = ws.snapshots.get()
        assert snap is not None and len(snap) == 5  # 4 events and the identify call
        same = (snap.person[1:] == snap.person[:-1]) & (snap.ts[1:] == snap.ts[:-1])
        assert same.sum() == 2  # person 0's three events at minute 0, after the merge
        funnel = ws.funnel(["A", "B", "C"], end=END).to_dict()["steps"]
        assert [s["people"] for s in funnel] == [2, 1, 1]


def test_a_stale_snapshot_is_never_used(tmp_path: Path) -> None:
    """A new event, a merge and a forget after the snapshot was built show at once."""
    with build(tmp_path / "ws", [(0, 0, "A", 0, None, False), (1, 5, "A", 0, None, True)],
               []) as ws:  # fmt: skip
        first = ws.prepare()
        assert first["enabled"] and first["rows"] == 2 and first["persons"] == 2
        assert ws.funnel(["A", "B"], end=END).to_dict()["steps"][1]["people"] == 0

        ws.import_events("app", [{"type": "track", "event": "B", "userId": "user-0",
                                  "messageId": "new", "timestamp": (T0 + timedelta(
                                      minutes=3)).isoformat() + "Z"}])  # fmt: skip
        assert ws.funnel(["A", "B"], end=END).to_dict()["steps"][1]["people"] == 1
        assert ws.snapshots.builds == 2

        # merge anon-1 into user-1: still two persons, one of them now known as user-1
        ws.import_events("web", [{"type": "identify", "userId": "user-1",
                                  "anonymousId": "anon-1", "messageId": "merge",
                                  "timestamp": (T0 + timedelta(minutes=9)).isoformat() + "Z"}])
        journeys = ws.journeys(end=END).to_dict()
        assert journeys["people"] == 2
        assert ws.prepare()["version"] == ws.data_version

        ws.forget("user-0")
        steps = ws.funnel(["A", "B"], end=END).to_dict()["steps"]
        assert [s["people"] for s in steps] == [1, 0]  # user-0's A and B are gone
        assert ws.journeys(end=END).to_dict()["people"] == 1


def test_snapshot_can_be_turned_off(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    data.mkdir()
    (data / "settings.json").write_text('{"analytics_snapshot": 0}')
    with build(data, [(0, 0, "A", 0, None, False), (0, 1, "B", 0, None, False)], []) as ws:
        assert ws.prepare() == {"enabled": False}
        assert [s["people"] for s in ws.funnel(["A", "B"], end=END).to_dict()["steps"]] == [1, 1]
        assert ws.snapshots.builds == 0


def test_a_question_the_snapshot_cannot_answer_does_not_build_it(tmp_path: Path) -> None:
    """A breakdown or segment on a column the snapshot lacks runs its SQL query without
    paying for a snapshot build first (on a big workspace that build takes seconds)."""
    events = [(0, 0, "A", 0, None, False), (0, 1, "B", 0, None, False),
              (1, 2, "A", 1, None, False)]  # fmt: skip
    with build(tmp_path / "ws", events, []) as ws:
        by_locale = ws.funnel(["A", "B"], end=END, by="locale").to_dict()
        assert [s["people"] for s in by_locale["steps"]] == [2, 1]
        assert ws.snapshots.builds == 0
        assert [s["people"] for s in ws.funnel(["A", "B"], end=END).to_dict()["steps"]] == [2, 1]
        assert ws.snapshots.builds == 1


def test_persons_outside_the_persons_table_are_numbered_too(tmp_path: Path) -> None:
    """The build numbers persons from the ``persons`` table; an event whose person is not
    there (never expected) makes it number the distinct resolved ids instead."""
    from seamline.analytics.snapshot import COLUMNS
    from seamline.store.sequence_fetch import fetch_sequences

    events = [(0, 0, "A", 0, None, False), (1, 1, "B", 1, None, False),
              (2, 2, "C", 2, None, True), (1, 3, "A", 0, None, False)]  # fmt: skip
    with build(tmp_path / "ws", events, []) as ws:
        before = fetch_sequences(ws.store, COLUMNS)
        by_persons = [before.person_ids[int(c)].as_py() for c in before.person]
        ws.store.query("DELETE FROM persons WHERE person_id = (SELECT min(person_id) "
                       "FROM persons)")  # fmt: skip
        after = fetch_sequences(ws.store, COLUMNS)
        by_distinct = [after.person_ids[int(c)].as_py() for c in after.person]
        assert by_distinct == by_persons and len(by_persons) == 4
        assert after.person_ids.to_pylist() == sorted(set(by_persons))  # dense, in id order
        assert (after.ts == before.ts).all()
        assert (after.columns["event"] == before.columns["event"]).all()
