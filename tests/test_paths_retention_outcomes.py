"""Paths, retention and outcomes: tiny hand-written streams and the exact numbers each rule gives.

Streams are lists of (person, time, event[, source]); times are datetimes, the source
picks the channel (app: mobile, calls: call_center, branch: store). The README states the
rules these tests pin.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import seamline
from seamline.analytics import Result
from seamline.errors import BadRequest
from seamline.settings import Settings
from tests.conftest import Server, run_cli

MONDAY = datetime(2026, 11, 2, 9, 0)  # weeks start on Monday (UTC)
SOURCES = {"app": "mobile", "calls": "call_center", "branch": "store"}
Stream = list[tuple[Any, ...]]


def at(days: float = 0, minutes: float = 0) -> datetime:
    return MONDAY + timedelta(days=days, minutes=minutes)


def batches(stream: Stream) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SOURCES}
    for n, (person, when, event, *source) in enumerate(stream):
        call: dict[str, Any] = {"type": "track", "event": event}
        if event == "(identify)":
            call = {"type": "identify", "traits": {"plan": "pro"}}
        out[source[0] if source else "app"].append({
            **call, "userId": person, "messageId": f"m{n}",
            "timestamp": when.isoformat() + "Z",
        })  # fmt: skip
    return out


def workspace(path: Path, stream: Stream, **settings: Any) -> seamline.Workspace:
    ws = seamline.Workspace(path, Settings.load(path, **settings) if settings else None)
    for name, channel in SOURCES.items():
        ws.add_source(name, channel)
    for name, batch in batches(stream).items():
        if batch:
            ws.import_events(name, batch)
    return ws


def paths_of(result: Result) -> list[tuple[list[str], int]]:
    return [(p["path"], p["people"]) for p in result.to_dict()["paths"]]


# -- paths -------------------------------------------------------------------------------
PATH_STREAM: Stream = [
    ("a", at(0, 0), "A"), ("a", at(0, 1), "B"), ("a", at(0, 2), "C"), ("a", at(0, 3), "D"),
    ("b", at(0, 0), "A"), ("b", at(0, 1), "B"), ("b", at(0, 2), "C"),
    # c's first A is the anchor; the later A does not start a second path
    ("c", at(0, 0), "X"), ("c", at(0, 1), "A"), ("c", at(0, 2), "B"), ("c", at(0, 3), "C"),
    ("c", at(0, 4), "A"), ("c", at(0, 5), "E"),
    ("d", at(0, 0), "A"),  # nothing after: a path of the anchor alone
    ("e", at(0, 0), "B"), ("e", at(0, 1), "C"),  # never did A
    ("e", at(0, 2), "(identify)"),  # not a touchpoint
]  # fmt: skip


def test_paths_after_first_occurrence(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", PATH_STREAM) as ws:
        two = ws.paths("A", steps=2)
        three = ws.paths("A", steps=3, top=2)
    assert paths_of(two) == [(["A", "B", "C"], 3), (["A"], 1)]
    assert two["people"] == 4 and [p["share"] for p in two["paths"]] == [0.75, 0.25]
    # ties in people are ordered by the path; top keeps the first N, people counts all
    assert paths_of(three) == [(["A"], 1), (["A", "B", "C"], 1)]
    assert three["people"] == 4 and three["distinct_paths"] == 4
    frame = three.to_pandas()
    assert frame["path_text"].tolist() == ["A", "A → B → C"]
    assert three.to_arrow().column("people").to_pylist() == [1, 1]


def test_paths_before_end_at_the_anchor(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", PATH_STREAM) as ws:
        before = ws.paths("C", steps=2, direction="before")
        unknown = ws.paths("Never Sent")
    # e has only B before C (the A just before it in the table is d's)
    assert paths_of(before) == [(["A", "B", "C"], 3), (["B", "C"], 1)]
    assert before["people"] == 4 and before["direction"] == "before"
    assert unknown["people"] == 0 and unknown["paths"] == []


def test_paths_collapse_consecutive_repeats_only(tmp_path: Path) -> None:
    stream = [
        ("f", at(0, 0), "A"), ("f", at(0, 1), "A"), ("f", at(0, 2), "B"), ("f", at(0, 3), "B"),
        ("f", at(0, 4), "B"), ("f", at(0, 5), "C"),
        ("g", at(0, 0), "A"), ("g", at(0, 1), "B"), ("g", at(0, 2), "A"), ("g", at(0, 3), "B"),
    ]  # fmt: skip
    with workspace(tmp_path / "ws", stream) as ws:
        kept = ws.paths("A", steps=2)
        collapsed = ws.paths("A", steps=2, collapse_repeats=True)
        into_c = ws.paths("C", steps=2, direction="before")
        into_c_collapsed = ws.paths("C", steps=2, direction="before", collapse_repeats=True)
    assert paths_of(kept) == [(["A", "A", "B"], 1), (["A", "B", "A"], 1)]
    # A,A,B,B,B,C -> A,B,C; a loop that is not consecutive (A,B,A) is kept
    assert paths_of(collapsed) == [(["A", "B", "A"], 1), (["A", "B", "C"], 1)]
    assert paths_of(into_c) == [(["B", "B", "C"], 1)]
    assert paths_of(into_c_collapsed) == [(["A", "B", "C"], 1)]


# -- retention ---------------------------------------------------------------------------
RETENTION_STREAM: Stream = [
    # cohort 2026-11-02
    ("a", at(0, 0), "Signup"), ("a", at(0, 60), "App Opened"),        # offset 0
    ("a", at(7), "App Opened"), ("a", at(8), "App Opened"),            # offset 1, once
    ("b", at(2, -60), "App Opened"),                                   # before signup: no
    ("b", at(2), "Signup"), ("b", at(14), "App Opened"),               # offset 2
    ("c", at(6, 14 * 60 + 30), "Signup"),                              # Sunday 23:30
    ("c", at(7, -8 * 60), "App Opened"),                               # Monday 01:00: offset 1
    # cohort 2026-11-09
    ("d", at(8), "Signup"), ("d", at(15), "Signup"), ("d", at(15, 5), "App Opened"),
    ("e", at(1), "App Opened"),                                        # no start event
]  # fmt: skip


def test_retention_cohorts_and_offsets(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", RETENTION_STREAM) as ws:
        weekly = ws.retention("Signup", "App Opened", "week", 3, end=datetime(2026, 12, 1))
        cut = ws.retention("Signup", "App Opened", "week", 3, end=datetime(2026, 11, 12))
    first, second = weekly["cohorts"]
    assert first == {"cohort": "2026-11-02", "people": 3, "retained": [1, 2, 1],
                     "rates": [1 / 3, 2 / 3, 1 / 3], "periods_observed": 3}  # fmt: skip
    assert second == {"cohort": "2026-11-09", "people": 1, "retained": [0, 1, 0],
                      "rates": [0.0, 1.0, 0.0], "periods_observed": 3}  # fmt: skip
    assert weekly["people"] == 4 and weekly["period"] == "week"
    # --to cuts the events and the periods observed: the week of Nov 16 has not begun
    assert [(c["cohort"], c["retained"], c["periods_observed"]) for c in cut["cohorts"]] == [
        ("2026-11-02", [1, 2, 0], 2), ("2026-11-09", [0, 0, 0], 1)]  # fmt: skip
    frame = weekly.to_pandas()
    assert len(frame) == 6 and list(frame.columns) == [
        "cohort", "people", "offset", "retained", "rate", "observed"]  # fmt: skip
    row = frame[(frame.cohort == "2026-11-02") & (frame.offset == 1)].iloc[0]
    assert (row.retained, row.rate, bool(row.observed)) == (2, 2 / 3, True)
    assert weekly.to_arrow().num_rows == 6


def test_retention_any_event_never_counts_the_first_as_a_return(tmp_path: Path) -> None:
    stream = [
        ("p", at(0, 60), "Home"), ("p", at(1), "(identify)"),         # identify is not activity
        ("q", at(0, 60), "Home"), ("q", at(0, 120), "Search"), ("q", at(2), "Home"),
    ]  # fmt: skip
    with workspace(tmp_path / "ws", stream) as ws:
        daily = ws.retention(period="day", periods=3, end=datetime(2026, 12, 1))
    assert daily["cohorts"] == [{"cohort": "2026-11-02", "people": 2, "retained": [1, 0, 1],
                                 "rates": [0.5, 0.0, 0.5], "periods_observed": 3}]  # fmt: skip


# -- outcomes ----------------------------------------------------------------------------
OUTCOME_STREAM: Stream = [
    # week of 2026-11-02
    ("a", at(0, 0), "App Opened"), ("a", at(0, 10), "Order Completed"),        # 600 s, contained
    ("b", at(1, 0), "App Opened"), ("b", at(1, 5), "Call Started", "calls"),
    ("b", at(1, 60), "Loan Approved"),                                          # 3600 s, a call
    ("c", at(2, 0), "App Opened"), ("c", at(2, 10), "Call Started", "calls"),
    ("c", at(2, 20), "Call Started", "calls"),                                  # no outcome
    ("d", at(3, 0), "Store Visit", "branch"),
    ("d", at(3, 30), "Order Completed", "branch"),                              # 1800 s, in a store
    ("e", at(6, 14 * 60), "App Opened"),                                        # Sunday 23:00
    # week of 2026-11-09
    ("e", at(7, -8 * 60 - 30), "Payment Succeeded"),                            # Monday 00:30: 0 s
    ("a", at(8, 180), "App Opened"), ("a", at(8, 200), "Order Completed"),     # 1200 s
    ("a", at(8, 300), "(identify)"),
]  # fmt: skip


def test_outcomes_per_week(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", OUTCOME_STREAM) as ws:
        result = ws.outcomes()
        loans = ws.outcomes(outcome="Loan Approved")
    first, second = result["periods"]
    assert first == {
        "period": "2026-11-02", "people": 5, "converted": 3, "outcome_rate": 0.6,
        "median_seconds_to_outcome": 1800.0, "p90_seconds_to_outcome": 3240.0,
        "contacts": 5, "contacts_per_person": 1.0, "contained": 1, "containment": 0.2,
    }  # fmt: skip
    assert second == {
        "period": "2026-11-09", "people": 2, "converted": 2, "outcome_rate": 1.0,
        "median_seconds_to_outcome": 600.0, "p90_seconds_to_outcome": 1080.0,
        "contacts": 0, "contacts_per_person": 0.0, "contained": 2, "containment": 1.0,
    }  # fmt: skip
    assert result["outcomes"][0] == "Order Completed" and len(result["outcomes"]) == 4
    assert result["costly"] == {"events": [], "channels": ["call_center", "store"]}
    assert [(p["converted"], p["contained"], p["median_seconds_to_outcome"])
            for p in loans["periods"]] == [(1, 0, 3600.0), (0, 0, None)]  # fmt: skip
    assert loans["outcomes"] == ["Loan Approved"]
    assert result.to_pandas()["people"].tolist() == [5, 2]
    assert result.to_arrow().column("median_seconds_to_outcome").to_pylist() == [1800.0, 600.0]


def test_outcomes_declared_costly_events_and_days(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", OUTCOME_STREAM, costly_events="Call Started") as ws:
        week = ws.outcomes()["periods"][0]
        daily = ws.outcomes(period="day", end=at(1, 12 * 60))["periods"]
    # store visits are no longer costly: d is contained, only the calls count
    assert (week["contacts"], week["contained"], week["containment"]) == (3, 2, 0.4)
    assert [(d["period"], d["people"], d["converted"], d["contacts"]) for d in daily] == [
        ("2026-11-02", 1, 1, 0), ("2026-11-03", 1, 1, 1)]  # fmt: skip


def test_outcomes_need_declared_events(tmp_path: Path) -> None:
    with workspace(tmp_path / "ws", OUTCOME_STREAM, outcome_events=" , ") as ws:
        with pytest.raises(BadRequest, match="outcome_events"):
            ws.outcomes()
        assert ws.outcomes(outcome=["Order Completed"])["periods"][0]["converted"] == 2
        with pytest.raises(BadRequest, match="Did you mean 'week'"):
            ws.outcomes(period="weak")
        with pytest.raises(BadRequest, match="steps"):
            ws.paths("A", steps=0)


# -- the three faces ---------------------------------------------------------------------
def test_cli_gives_the_python_answers(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    end = datetime(2026, 12, 1)
    with workspace(data, PATH_STREAM + RETENTION_STREAM[:4]) as ws:
        paths = ws.paths("A", steps=2, collapse_repeats=True).to_dict()
        before = ws.paths("C", steps=2, direction="before").to_dict()
        retention = ws.retention("Signup", "App Opened", periods=2, end=end).to_dict()
        outcomes = ws.outcomes(outcome="App Opened", period="day").to_dict()
    assert run_cli(data, "paths", "A", "--steps", "2", "--collapse-repeats") == paths
    assert run_cli(data, "paths", "C", "--steps", "2", "--before") == before
    assert run_cli(data, "retention", "--start-event", "Signup", "--return-event", "App Opened",
                   "--periods", "2", "--to", end.isoformat()) == retention  # fmt: skip
    assert run_cli(data, "outcomes", "--period", "day", "--outcome", "App Opened") == outcomes
    human = run_cli(data, "paths", "A", "--steps", "2", as_json=False)
    assert "A → B → C" in human.stdout
    bad = run_cli(data, "retention", "--periods", "0", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr


def test_api_with_a_read_token(server: Server) -> None:
    admin = {"Authorization": f"Bearer {server.admin_token()}"}
    for name, channel in SOURCES.items():
        server.add_source(name, channel)
    for name, batch in batches(OUTCOME_STREAM + PATH_STREAM).items():
        imported = httpx.post(server.url + "/api/import", headers=admin,
                              json={"source": name, "events": batch})  # fmt: skip
        assert imported.status_code == 200, imported.text
    token = server.cli("tokens", "add", "reader", "--scope", "read")["token"]
    read = {"Authorization": f"Bearer {token}"}

    def get(path: str, **params: Any) -> httpx.Response:
        return httpx.get(server.url + path, params=params, headers=read)

    assert httpx.get(server.url + "/api/paths", params={"event": "A"}).status_code == 401
    paths = get("/api/paths", event="A", steps=2).json()
    assert paths["people"] == 4 and paths["paths"][0] == {"path": ["A", "B", "C"], "people": 3,
                                                         "share": 0.75}  # fmt: skip
    retention = get("/api/retention", period="week", periods=2, end="2026-12-01T00:00:00Z").json()
    assert retention["cohorts"][0]["cohort"] == "2026-11-02"
    outcomes = get("/api/outcomes").json()
    assert [p["converted"] for p in outcomes["periods"]] == [3, 2]
    assert get("/api/outcomes", outcome=["Loan Approved", "Payment Succeeded"]).json()[
        "outcomes"] == ["Loan Approved", "Payment Succeeded"]  # fmt: skip
    bad = get("/api/retention", period="month")
    assert bad.status_code in (400, 422) and set(bad.json()) == {"code", "message"}
    # while the server owns the workspace, the CLI goes through it (RemoteWorkspace)
    assert server.cli("paths", "A", "--steps", "2") == paths
    assert server.cli("outcomes") == outcomes
