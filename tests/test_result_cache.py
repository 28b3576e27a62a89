"""The analysis result cache (seamline/analytics/cache.py) and the dashboard's background
precompute (seamline/web/precompute.py), over a real workspace and DuckDB file.

The promise pinned here: a cached result is never served after a committed write (the
data version moves first), and concurrent callers share one computation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from seamline.analytics.cache import ResultCache, key_of
from seamline.app import Workspace
from seamline.errors import BadRequest
from seamline.settings import Settings
from seamline.web.precompute import Precompute


def _events(user: str, names: list[str], start: datetime | None = None) -> list[dict[str, Any]]:
    start = start or datetime.now(UTC) - timedelta(hours=2)
    return [{"type": "track", "event": name, "userId": user, "messageId": f"{user}-{i}-{name}",
             "timestamp": (start + timedelta(minutes=i)).isoformat()}
            for i, name in enumerate(names)]  # fmt: skip


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    settings = Settings.load(None, result_cache_entries=8, precompute_seconds=0)
    ws = Workspace(tmp_path / "ws", settings)
    ws.add_source("app", "mobile")
    try:
        yield ws
    finally:
        ws.close()


# -- the cache on its own ---------------------------------------------------------------
def test_entry_is_served_only_at_its_version() -> None:
    cache = ResultCache(max_entries=4)
    calls: list[int] = []
    version = [1]

    def compute() -> int:
        calls.append(version[0])
        return version[0] * 10

    key = key_of("answer", {"x": 1})
    first = cache.get_or_compute(key, lambda: version[0], compute)
    again = cache.get_or_compute(key, lambda: version[0], compute)
    assert (first.value, first.hit, again.value, again.hit) == (10, False, 10, True)
    version[0] = 2  # a commit
    after = cache.get_or_compute(key, lambda: version[0], compute)
    assert (after.value, after.hit, after.version) == (20, False, 2)
    assert calls == [1, 2]
    assert cache.get(key, 1) is None  # the old entry is gone, not merely shadowed


def test_lru_is_bounded_and_keys_are_canonical() -> None:
    cache = ResultCache(max_entries=2)
    for n in range(3):
        cache.get_or_compute(key_of("a", {"n": n}), lambda: 0, lambda n=n: n)
    assert len(cache) == 2
    assert cache.get(key_of("a", {"n": 0}), 0) is None  # least recently used went first
    assert cache.get(key_of("a", {"n": 2}), 0) is not None
    # parameter order, lists vs tuples and dicts all give one key
    assert key_of("f", {"steps": ["A", "B"], "by": None}) == key_of(
        "f", {"by": None, "steps": ("A", "B")})  # fmt: skip
    assert key_of("f", {"where": {"b": 1, "a": [2]}}) == key_of("f", {"where": {"a": (2,), "b": 1}})


def test_entries_expire_after_max_age() -> None:
    cache = ResultCache(max_entries=2, max_age=0.05)
    key = key_of("clock", {})
    assert not cache.get_or_compute(key, lambda: 0, lambda: 1).hit
    assert cache.get_or_compute(key, lambda: 0, lambda: 1).hit
    time.sleep(0.08)
    assert not cache.get_or_compute(key, lambda: 0, lambda: 2).hit


def test_concurrent_callers_share_one_computation() -> None:
    cache = ResultCache()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow() -> str:
        runs.append(1)
        started.set()
        release.wait(5)
        return "done"

    results: list[Any] = []
    owner = threading.Thread(target=lambda: results.append(
        cache.get_or_compute(key_of("slow", {}), lambda: 0, slow)))  # fmt: skip
    owner.start()
    assert started.wait(5)
    waiters = [threading.Thread(target=lambda: results.append(
        cache.get_or_compute(key_of("slow", {}), lambda: 0, slow))) for _ in range(3)]  # fmt: skip
    for waiter in waiters:
        waiter.start()
    time.sleep(0.05)
    release.set()
    for thread in (owner, *waiters):
        thread.join(5)
    assert len(runs) == 1
    assert [r.value for r in results] == ["done"] * 4
    assert sum(r.hit for r in results) == 3


def test_a_failure_is_not_cached() -> None:
    cache = ResultCache()
    key = key_of("flaky", {})

    def fail() -> int:
        raise BadRequest("no", code="x")

    with pytest.raises(BadRequest):
        cache.get_or_compute(key, lambda: 0, fail)
    assert cache.get_or_compute(key, lambda: 0, lambda: 5).value == 5


# -- through the workspace ---------------------------------------------------------------
def test_import_is_never_hidden_by_the_cache(workspace: Workspace) -> None:
    before = workspace.data_version
    workspace.import_events("app", _events("u1", ["Signup Started", "Plan Chosen"]))
    assert workspace.data_version > before
    stats = workspace.cached("stats")
    paths = workspace.cached("paths", event="Signup Started")
    assert stats.value["events"] == 2 and not stats.hit
    assert paths.value.to_dict()["people"] == 1
    assert workspace.cached("stats").hit  # no write since: served from the cache
    assert workspace.cached("paths", event="Signup Started", steps=3).hit  # defaults bound
    workspace.import_events("app", _events("u2", ["Signup Started", "Signup Completed"]))
    fresh = workspace.cached("stats")
    assert not fresh.hit and fresh.value["events"] == 4
    fresh_paths = workspace.cached("paths", event="Signup Started").value.to_dict()
    assert fresh_paths["people"] == 2
    assert fresh_paths == workspace.paths("Signup Started").to_dict()


def test_other_commits_invalidate_too(workspace: Workspace) -> None:
    workspace.import_events("app", _events("u1", ["A", "B"]))
    assert len(workspace.cached("stats").value["sources"]) == 1
    workspace.add_source("site", "web")  # a writer call, not an append
    assert len(workspace.cached("stats").value["sources"]) == 2
    forgotten = workspace.cached("retention").value.to_dict()["people"]
    workspace.forget("u1")
    assert forgotten == 1 and workspace.cached("retention").value.to_dict()["people"] == 0


def test_bad_cached_calls_name_the_problem(workspace: Workspace) -> None:
    with pytest.raises(BadRequest, match="not a cached analysis"):
        workspace.cached("forget", identifier="u1")
    with pytest.raises(BadRequest, match="paths"):
        workspace.cached("paths", evnt="A")


def test_precompute_fills_the_cache_after_commits(workspace: Workspace) -> None:
    def top_event() -> dict[str, Any] | None:  # parameters that depend on the data
        names = workspace.cached("event_names").value
        return {"event": names[0]["event"]} if names else None

    jobs = [("stats", {}), ("retention", {}), ("journeys", {"min_people": 1, "top": 40}),
            ("paths", top_event)]  # fmt: skip
    precompute = Precompute(workspace, jobs, interval=0.2)
    workspace.writer.add_listener(precompute.poke)
    precompute.start()
    try:
        workspace.import_events("app", _events("u1", ["A", "B", "C"]))
        version = workspace.data_version
        deadline = time.monotonic() + 20
        while precompute.last_version < version and time.monotonic() < deadline:
            time.sleep(0.05)
        assert precompute.last_version >= version, "precompute did not catch up"
        stats = workspace.cached("stats")
        journeys = workspace.cached("journeys", min_people=1, top=40)
        assert stats.hit and stats.value["events"] == 3
        assert journeys.hit and len(journeys.value.to_dict()["edges"]) == 2
        assert workspace.cached("paths", event="A").hit
        rounds = precompute.rounds
        time.sleep(0.5)  # no commit: nothing is recomputed
        assert precompute.rounds == rounds
    finally:
        precompute.stop()
    assert not precompute._thread.is_alive()


def test_analyses_share_rows_within_a_data_version(workspace: Workspace) -> None:
    workspace.snapshots.enabled = False  # the SQL path's sharing (the snapshot skips SQL)
    workspace.import_events("app", _events("u1", ["A", "B", "C"]))
    rows = workspace.analyses.engine
    assert rows.dialect == "duckdb"
    hits = rows.hits
    journeys = workspace.journeys()  # scans the sorted touchpoints
    paths = workspace.paths("A")  # the same query: served from the shared rows
    assert rows.hits == hits + 1
    assert len(journeys.to_dict()["edges"]) == 2 and paths.to_dict()["people"] == 1
    workspace.import_events("app", _events("u2", ["A", "D"]))
    assert workspace.paths("A").to_dict()["people"] == 2  # a new version scans again
    assert rows.hits == hits + 1


def test_shared_rows_respect_the_byte_budget(tmp_path: Path) -> None:
    settings = Settings.load(None, result_cache_rows_mb=0, precompute_seconds=0)
    with Workspace(tmp_path / "ws", settings) as ws:
        ws.add_source("app", "mobile")
        ws.import_events("app", _events("u1", ["A", "B"]))
        ws.journeys()
        ws.paths("A")
        assert ws.analyses.engine.hits == 0  # nothing kept with no budget
