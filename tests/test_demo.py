"""The demo generator: sources, volume, idempotence and a planted seam that SQL can see."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from rich.console import Console

import seamline
from seamline.app import Workspace
from seamline.demo import PLANTED, SOURCES, build_demo, write_demo_settings

NOW = datetime(2026, 11, 23, 12, 0, 0)

# Card-activation events in the app, and whether the same phone number (linked to the user
# by its identify call) reached the call centre within the hour after.
_CALLED_WITHIN_HOUR = """
WITH phones AS (
    SELECT DISTINCT user_id, traits->>'phone' AS phone FROM events WHERE type = 'identify'
),
calls AS (
    SELECT context->>'$.traits.phone' AS phone, timestamp AS ts
    FROM events WHERE channel = 'call_center' AND event = 'Call Started'
),
anchors AS (
    SELECT e.event, e.timestamp AS ts, p.phone
    FROM events e JOIN phones p USING (user_id)
    WHERE e.channel = 'mobile' AND e.event IN ('Card Activation Failed', 'App Opened')
)
SELECT event, count(*) AS n,
       avg(CASE WHEN EXISTS (
           SELECT 1 FROM calls c
           WHERE c.phone = a.phone AND c.ts > a.ts AND c.ts <= a.ts + INTERVAL 1 HOUR
       ) THEN 1 ELSE 0 END) AS rate
FROM anchors a GROUP BY event
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, dict[str, Any]]]:
    data = tmp_path_factory.mktemp("demo") / "workspace"
    with seamline.open(data) as ws:
        summary = build_demo(ws, people=200, seed=11, console=Console(quiet=True), now=NOW)
        yield ws, summary


def test_creates_the_six_sources(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, summary = demo
    expected = {(name, channel, unit) for name, channel, unit in SOURCES}
    assert {(s["name"], s["channel"], s["unit"]) for s in ws.sources()} == expected
    assert {s["name"] for s in summary["sources"]} == {name for name, _, _ in SOURCES}


def test_stores_multichannel_events(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, summary = demo
    assert summary["failed"] == 0
    assert summary["duplicates"] == 0
    assert summary["people"] == 200
    assert 5_000 <= summary["events"] <= 20_000  # about 50 per customer
    counts = dict(ws.store.query("SELECT channel, count(*) FROM events GROUP BY channel"))
    assert sum(counts.values()) == summary["events"]
    assert {"mobile", "web", "call_center", "email"} <= set(counts)
    assert counts["mobile"] > counts["web"] > counts["call_center"]
    low, high = ws.store.query_one("SELECT min(timestamp), max(timestamp) FROM events") or (0, 0)
    assert (NOW - low).days <= 30 and high <= NOW
    types = {row[0] for row in ws.store.query("SELECT DISTINCT type FROM events")}
    assert types == {"track", "identify", "screen", "page"}


def test_identity_needs_stitching(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _ = demo
    anonymous_app = ws.store.query_one(
        "SELECT count(*) FROM events WHERE channel = 'mobile' AND user_id IS NULL"
    )
    assert anonymous_app and anonymous_app[0] > 0
    calls = ws.store.query(
        "SELECT DISTINCT user_id IS NULL, anonymous_id LIKE 'phone:+44%', "
        "context->>'$.traits.phone' IS NOT NULL FROM events WHERE channel = 'call_center'"
    )
    assert calls == [(True, True, True)]
    emails = ws.store.query(
        "SELECT DISTINCT user_id IS NULL, context->>'$.traits.email' LIKE '%@%' "
        "FROM events WHERE channel = 'email'"
    )
    assert emails == [(True, True)]
    libraries = {row[0] for row in ws.store.query("SELECT DISTINCT library_name FROM events")}
    assert {"analytics-swift", "analytics-kotlin", "analytics.js"} <= libraries


def test_card_activation_failure_drives_calls(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _ = demo
    rates = {event: (n, rate) for event, n, rate in ws.store.query(_CALLED_WITHIN_HOUR)}
    failed_n, failed_rate = rates["Card Activation Failed"]
    opened_n, baseline = rates["App Opened"]
    assert failed_n >= 10 and opened_n >= 500
    assert baseline < 0.1
    assert failed_rate > 0.2
    assert failed_rate > 3 * baseline
    assert PLANTED.call_after_activation_failure > 3 * PLANTED.call_after_clean_session


def test_android_520_activation_collapses(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, _ = demo
    rows = ws.store.query(
        "SELECT os_name = 'Android' AND app_version = '5.2.0', "
        "count(*) FILTER (event = 'Card Activation Failed') "
        "/ count(*) FILTER (event = 'Card Activation Started') "
        "FROM events WHERE event LIKE 'Card Activation %' GROUP BY ALL"
    )
    rate = dict(rows)
    assert rate[True] > 2 * rate[False]


def test_rerun_stores_nothing_new(demo: tuple[Workspace, dict[str, Any]]) -> None:
    ws, summary = demo
    again = build_demo(ws, people=200, seed=11, console=Console(quiet=True))
    assert again["events"] == 0
    assert again["duplicates"] == summary["events"]
    assert again["failed"] == 0
    total = ws.store.query_one("SELECT count(*) FROM events")
    assert total and total[0] == summary["events"]


def test_same_seed_same_events(tmp_path: Path) -> None:
    def message_ids(path: Path, people: int) -> set[str]:
        with seamline.open(path) as ws:
            build_demo(ws, people=people, seed=3, console=Console(quiet=True), now=NOW)
            return {row[0] for row in ws.store.query("SELECT message_id FROM events")}

    small = message_ids(tmp_path / "a", 20)
    assert small == message_ids(tmp_path / "b", 20)
    assert small < message_ids(tmp_path / "c", 30)  # a bigger demo contains the smaller one


def test_cli_demo_json(tmp_path: Path) -> None:
    data = tmp_path / "cli"
    summary = run_cli(data, "demo", "--no-serve", "--people", "100")
    assert summary["people"] == 100
    assert summary["failed"] == 0
    assert summary["events"] > 1000
    assert {s["name"] for s in summary["sources"]} == {name for name, _, _ in SOURCES}
    again = run_cli(data, "demo", "--no-serve", "--people", "100")
    assert again["events"] == 0 and again["duplicates"] == summary["events"]
    # the demo declares the bank's own outcomes, so the loan approval counts as one
    with seamline.open(data) as ws:
        outcomes = ws.outcomes(period="week").to_dict()
    assert "Loan Application Approved" in outcomes["outcomes"]
    assert sum(row["converted"] for row in outcomes["periods"]) > 0


def test_demo_settings_keep_what_the_user_set(tmp_path: Path) -> None:
    data = tmp_path / "ws"
    data.mkdir()
    (data / "settings.json").write_text('{"outcome_events": "Mine"}')
    assert write_demo_settings(data)["outcome_events"] == "Mine"
    (data / "settings.json").write_text("{not json")
    with pytest.raises(seamline.errors.BadRequest, match=r"settings\.json"):
        write_demo_settings(data)
