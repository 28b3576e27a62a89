"""Which metrics matter: validity scores over a synthetic world with a planted driver.

The world: 600 people whose first touchpoint falls 150 to 70 days before END. Each uses
the feature "Report Exported" 0-6 times in their first 13.5 days (more in later weekly
cohorts: adoption grows, so the weekly outcome rate moves with it); that count drives both
outcomes (an order in days 16-28 with probability 0.08 + 0.13 per use, a return visit in
days 32-55 with probability 0.10 + 0.12 per use). The decoy "Feed Refreshed" merely counts
activity: 1-8 bursts of 2-6 refreshes two seconds apart, independent of everything. App
sessions (1-5, with "Home" screens) are independent too. The Python API runs on the file
(with END as as-of, so the figures never change), then a real `seamline serve` serves the
same workspace to the JSON API, the CLI and a real Chromium.
"""

from __future__ import annotations

import random
import re
import shutil
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import ARTIFACTS, Server, run_cli
from playwright.sync_api import Browser, sync_playwright
from scipy.stats import mannwhitneyu, spearmanr

import seamline
from seamline.errors import BadRequest

END = datetime(2026, 9, 1)
DRIVER, DECOY, ORDER = "Report Exported", "Feed Refreshed", "Order Completed"
METRICS = [f"event:{DRIVER}", f"event:{DECOY}"]
PEOPLE = 600
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Truth:
    """What the generator planted, per user id."""

    uses: dict[str, int] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)  # properties.rows of each export
    ordered: set[str] = field(default_factory=set)
    returned: set[str] = field(default_factory=set)


def world_events(seed: int = 11) -> tuple[list[dict[str, Any]], Truth]:
    rng, truth = random.Random(seed), Truth()
    events: list[dict[str, Any]] = []

    def add(user: str, kind: str, name: str, at: datetime, **properties: Any) -> None:
        event = {"type": kind, "userId": user, "messageId": f"{user}-{len(events)}",
                 "timestamp": at.isoformat() + "Z", "event" if kind == "track" else "name": name,
                 "properties": properties}  # fmt: skip
        events.append(event)

    for i in range(PEOPLE):
        user = f"u{i:04d}"
        anchor = END - timedelta(days=150) + timedelta(seconds=rng.uniform(0, 80 * 86400))
        add(user, "track", "Application Opened", anchor)
        for _ in range(rng.randint(1, 5)):
            start = anchor + timedelta(seconds=rng.uniform(3600, 13 * 86400))
            add(user, "track", "Application Opened", start)
            for screen in range(rng.randint(1, 3)):
                add(user, "screen", "Home", start + timedelta(seconds=20 + 40 * screen))
        # adoption grows cohort by cohort (week 0 to 11), so the outcome rate moves with it
        week = (anchor - (END - timedelta(days=150))) // timedelta(weeks=1)
        uses = truth.uses[user] = sum(rng.random() < 0.15 + 0.05 * week for _ in range(6))
        truth.rows[user] = [rng.randint(1, 9) for _ in range(uses)]
        for rows in truth.rows[user]:
            add(user, "track", DRIVER, anchor + timedelta(seconds=rng.uniform(60, 13.5 * 86400)),
                rows=rows)
        for _ in range(rng.randint(1, 8)):
            burst = anchor + timedelta(seconds=rng.uniform(60, 13.5 * 86400))
            for repeat in range(rng.randint(2, 6)):
                add(user, "track", DECOY, burst + timedelta(seconds=2 * repeat))
        if rng.random() < 0.08 + 0.13 * uses:
            add(user, "track", ORDER, anchor + timedelta(days=rng.uniform(16, 28)))
            truth.ordered.add(user)
        if rng.random() < 0.10 + 0.12 * uses:
            add(user, "track", "Application Opened", anchor + timedelta(days=rng.uniform(32, 55)))
            truth.returned.add(user)
    return events, truth


@dataclass
class World:
    data: Path
    truth: Truth
    person_of: dict[str, str]  # user id -> person id
    order: dict[str, Any]  # Python API results, computed before the server owns the file
    retention: dict[str, Any]
    properties: dict[str, Any]
    frame: Any


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    data = tmp_path_factory.mktemp("metrics") / "workspace"
    events, truth = world_events()
    with seamline.open(data) as ws:
        ws.add_source("app", "mobile")
        for start in range(0, len(events), 5000):
            assert ws.import_events("app", events[start:start + 5000])["failed"] == 0
        pairs = ws.store.query_arrow(
            "SELECT DISTINCT user_id, resolved_person_id FROM events_resolved").to_pylist()
        order = ws.metrics_score(ORDER, METRICS, end=END)
        retention = ws.metrics_score("retention:30", METRICS, end=END)
        properties = ws.metrics_score(ORDER, ["property:properties.rows",
                                              "property:properties.rows:mean"],
                                      builtins=False, end=END)  # fmt: skip
        frame = order.to_pandas()
    person_of = {row["user_id"]: row["resolved_person_id"] for row in pairs}
    return World(data, truth, person_of, order.to_dict(), retention.to_dict(),
                 properties.to_dict(), frame)


@dataclass
class Served:
    server: Server
    read_token: str


@pytest.fixture(scope="module")
def served(world: World) -> Iterator[Served]:
    server = Server(world.data).start()
    try:
        yield Served(server, server.cli("tokens", "add", "reader", "--scope", "read")["token"])
    finally:
        server.stop()


def by_metric(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in result["metrics"]}


# -- the analysis -------------------------------------------------------------------------
def test_driver_ranks_first_and_decoy_is_vanity(world: World) -> None:
    result = world.order
    first = result["metrics"][0]
    assert first["metric"] == f"event:{DRIVER}" and first["rank"] == 1
    assert first["verdict"] == "predictive" and first["direction"] == "higher"
    assert first["ci_low"] > 0.55 and first["inflatability"] == 0
    decoy = by_metric(result)[f"event:{DECOY}"]
    assert decoy["verdict"] == "vanity"
    assert decoy["ci_low"] <= 0.5 <= decoy["ci_high"]
    # across the 12-13 weekly cohorts the driver's mean moves with the outcome rate
    assert first["sensitivity"] > 0.7 and decoy["sensitivity"] < 0.3
    assert first["sensitivity_weeks"] >= 12
    # 1-8 bursts of 2-6 refreshes: every refresh after a burst's first is a repeat
    assert 0.6 < decoy["inflatability"] < 0.8
    # events per person mostly counts the decoy's refreshes: inflatable, not predictive
    events = by_metric(result)["events"]
    assert events["inflatability"] > 0.3 and events["verdict"] != "predictive"
    # ranked by the interval's lower bound
    lows = [m["ci_low"] for m in result["metrics"] if m["verdict"] != "insufficient_data"]
    assert lows == sorted(lows, reverse=True)
    assert [m["rank"] for m in result["metrics"]] == list(range(1, len(result["metrics"]) + 1))


def test_counts_match_the_planted_world(world: World) -> None:
    result = world.order
    assert result["people"] == result["eligible"] == PEOPLE  # every window ended before END
    assert result["converted"] == len(world.truth.ordered)
    assert result["training"] + result["held_out"] == PEOPLE
    assert result["outcome_window"] == ["14d", "44d"]
    assert world.retention["converted"] == len(world.truth.returned)
    assert world.retention["outcome_window"] == ["30d", "60d"]
    driver = by_metric(result)[f"event:{DRIVER}"]
    assert driver["mean"] == pytest.approx(np.mean(list(world.truth.uses.values())), abs=1e-4)


def test_auc_and_spearman_match_scipy_on_the_held_out_split(world: World) -> None:
    """Recompute the driver's figures from the planted counts and the documented split."""
    held = [u for u, person in world.person_of.items()
            if zlib.crc32(person.encode()) % 10_000 < 5_000]  # fmt: skip
    assert len(held) == world.order["held_out"]
    uses = np.array([world.truth.uses[u] for u in held], dtype=float)
    ordered = np.array([u in world.truth.ordered for u in held])
    u_statistic = mannwhitneyu(uses[ordered], uses[~ordered]).statistic
    expected = u_statistic / (ordered.sum() * (~ordered).sum())
    driver = by_metric(world.order)[f"event:{DRIVER}"]
    assert driver["auc"] == pytest.approx(expected, abs=1e-4)
    assert driver["spearman"] == pytest.approx(spearmanr(uses, ordered).statistic, abs=1e-4)
    assert driver["ci_low"] < driver["auc"] < driver["ci_high"]


def test_outcome_by_retention(world: World) -> None:
    result = world.retention
    assert result["outcome"] == {"kind": "retention", "label": "retention:30", "events": [],
                                 "days": 30}  # fmt: skip
    assert result["metrics"][0]["metric"] == f"event:{DRIVER}"
    assert result["metrics"][0]["verdict"] == "predictive"
    assert result["metrics"][0]["sensitivity"] > 0.7
    assert by_metric(result)[f"event:{DECOY}"]["verdict"] == "vanity"


def test_property_sums_and_means(world: World) -> None:
    result = by_metric(world.properties)
    assert set(result) == {"property:properties.rows:sum", "property:properties.rows:mean"}
    total = result["property:properties.rows:sum"]
    assert total["mean"] == pytest.approx(np.mean([sum(r) for r in world.truth.rows.values()]),
                                          abs=1e-4)  # fmt: skip
    assert total["verdict"] == "predictive"  # more exports, more rows: it carries the driver
    means = [np.mean(r) if r else 0.0 for r in world.truth.rows.values()]
    assert result["property:properties.rows:mean"]["mean"] == pytest.approx(np.mean(means),
                                                                            abs=1e-4)  # fmt: skip


def test_to_pandas_has_a_row_per_metric(world: World) -> None:
    frame = world.frame
    assert list(frame["metric"])[:1] == [f"event:{DRIVER}"]
    assert len(frame) == len(world.order["metrics"]) == 7  # 5 built-ins + 2 named
    assert {"auc", "ci_low", "ci_high", "verdict", "inflatability"} <= set(frame.columns)


def test_python_api_refuses_bad_parameters_naming_the_field(tmp_path: Path) -> None:
    with seamline.open(tmp_path / "empty") as ws:
        cases = {"observe": {"observe": "soon"}, "predict": {"predict": "0d"},
                 "holdout": {"holdout": 1.5}, "metric": {"metrics": ["clicks"]},
                 "outcome": {"outcome": "retention:x"}}  # fmt: skip
        for name, arguments in cases.items():
            with pytest.raises(BadRequest) as refused:
                ws.metrics_score(**arguments)
            assert name in refused.value.message, refused.value.message
        with pytest.raises(BadRequest, match="retention:14 or more"):
            ws.metrics_score("retention:7")  # would start inside the 14-day observation
        with pytest.raises(BadRequest, match="sum' or 'mean"):
            ws.metrics_score(metrics=["property:properties.amount:max"])
        empty = ws.metrics_score(ORDER).to_dict()  # no events: scored as insufficient
        assert empty["eligible"] == 0 and empty["notes"]
        assert {m["verdict"] for m in empty["metrics"]} == {"insufficient_data"}


def test_counting_rules_on_a_golden_stream(tmp_path: Path) -> None:
    """One person, nine events: sessions, days, screens, opens, repeats, the window edge."""
    start = END - timedelta(days=60) + timedelta(hours=10)
    stream = [(0, "track", "Application Opened"), (600, "screen", "Home"),
              (605, "screen", "Home"),  # a repeat: the same name 5 s later
              (3000, "track", "X"),  # 40 min after the last event: a new session
              (3004, "track", "X"), (3008, "track", "Y"),
              (3012, "track", "X"),  # 8 s after the previous X (Y between): a repeat too
              (86400, "track", "Application Opened"),  # next day, new session
              (20 * 86400, "track", "X")]  # day 20: after the 14-day observation window
    events = [{"type": kind, "userId": "solo", "messageId": f"m{i}",
               "timestamp": (start + timedelta(seconds=at)).isoformat() + "Z",
               "event" if kind == "track" else "name": name}
              for i, (at, kind, name) in enumerate(stream)]  # fmt: skip
    with seamline.open(tmp_path / "golden") as ws:
        ws.add_source("app", "mobile")
        assert ws.import_events("app", events)["stored"] == len(events)
        result = by_metric(ws.metrics_score("retention:14", ["event:X"], end=END).to_dict())
    expected = {"events": (8, 3 / 8), "sessions": (3, 0), "active_days": (2, 0),
                "app_opens": (2, 0), "screens_per_session": (2 / 3, 0.5),
                "event:X": (3, 2 / 3)}  # fmt: skip
    for metric, (value, inflatability) in expected.items():
        assert result[metric]["mean"] == pytest.approx(value, abs=1e-4), metric
        assert result[metric]["inflatability"] == pytest.approx(inflatability, abs=1e-4), metric
        assert result[metric]["verdict"] == "insufficient_data"  # one person cannot score


def test_rank_statistics_match_scipy() -> None:
    from scipy.stats import rankdata

    from seamline.analytics.validity import auc, average_ranks, hanley_mcneil, spearman

    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, 400).astype(float)  # many ties
    positive = rng.random(400) < 0.3 + 0.08 * values
    assert np.allclose(average_ranks(values), rankdata(values))
    u_statistic = mannwhitneyu(values[positive], values[~positive]).statistic
    pairs = positive.sum() * (~positive).sum()
    assert auc(values, positive) == pytest.approx(u_statistic / pairs)
    assert spearman(values, positive.astype(float)) == pytest.approx(
        spearmanr(values, positive).statistic)  # fmt: skip
    assert auc(values, np.zeros(400, dtype=bool)) is None
    # Hanley & McNeil (1982): A = 0.8 with 50 and 50 cases has a standard error of 0.0445
    low, high = hanley_mcneil(0.8, 50, 50)
    assert (high - low) / (2 * 1.959964) == pytest.approx(0.0445, abs=5e-4)


# -- JSON API and CLI -----------------------------------------------------------------------
def test_api_bad_parameters_name_the_field(served: Served) -> None:
    headers = {"Authorization": f"Bearer {served.read_token}"}
    url = served.server.url + "/api/metrics/score"
    cases = {"holdout": {"holdout": "2"}, "observe": {"observe": "two weeks"},
             "predict": {"predict": "-1d"}, "metric": {"metric": "event:"},
             "outcome": {"outcome": "retention:9999"}}  # fmt: skip
    for name, params in cases.items():
        answer = httpx.get(url, params=params, headers=headers, timeout=30)
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert set(body) == {"code", "message"} and name in body["message"], body
    assert httpx.get(url).status_code == 401


def test_api_answers_and_is_documented(served: Served, world: World) -> None:
    headers = {"Authorization": f"Bearer {served.read_token}"}
    params = {"outcome": ORDER, "metric": METRICS, "end": END.isoformat()}
    answer = httpx.get(served.server.url + "/api/metrics/score", params=params,
                       headers=headers, timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.json() == world.order
    schema = httpx.get(served.server.url + "/openapi.json").json()
    operation = schema["paths"]["/api/metrics/score"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"outcome", "metric", "observe", "predict", "holdout"} <= names


def test_cli_json_equals_python_api(served: Served, world: World) -> None:
    """The CLI goes through the running server (RemoteWorkspace) and answers the same."""
    through_cli = served.server.cli("metrics", "score", "--outcome", ORDER,
                                    "--metric", METRICS[0], "--metric", METRICS[1],
                                    "--to", END.date().isoformat())  # fmt: skip
    assert through_cli == world.order
    table = run_cli(served.server.data, "metrics", "score", "--outcome", "retention:30",
                    "--to", END.date().isoformat(), "--metric", METRICS[0], as_json=False,
                    env={"COLUMNS": "160"})  # fmt: skip
    assert f"event:{DRIVER}" in table.stdout and "predictive" in table.stdout
    refused = run_cli(served.server.data, "metrics", "score", "--holdout", "3", check=False)
    assert refused.returncode == 1 and "holdout" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- dashboard ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: install Debian's chromium (/usr/bin/chromium).",
                    pytrace=False)  # fmt: skip
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )  # fmt: skip
        yield chromium
        chromium.close()


def test_dashboard_metrics_page(browser: Browser, served: Served) -> None:
    base = served.server.url
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(base + "/metrics")
        page.get_by_role("textbox", name="API token", exact=True).fill(served.read_token)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_load_state()
        nav = page.get_by_role("navigation", name="Main").get_by_role("link", name="Metrics")
        assert nav.get_attribute("aria-current") == "page"
        # the form: outcome, two extra metrics, the CLI's windows
        page.get_by_label("Outcome", exact=True).fill(ORDER)
        page.get_by_label("Extra metrics").fill("\n".join(METRICS))
        page.get_by_label("Observe", exact=True).fill("14d")
        page.get_by_label("Predict", exact=True).fill("30d")
        page.get_by_role("button", name="Score metrics").click()
        page.wait_for_selector("#metrics-chart[data-rendered='true']", timeout=20_000)
        assert page.locator("#metrics-chart svg.main-svg").count() >= 1
        assert page.locator("#metrics-chart .scatterlayer .point").count() == 7
        rows = page.locator("#metrics-table tbody tr")
        assert rows.first.get_attribute("data-metric") == f"event:{DRIVER}"
        assert "predictive" in rows.first.locator("[data-col=verdict]").inner_text()
        decoy = page.locator(f"#metrics-table tr[data-metric='event:{DECOY}']")
        assert "vanity" in decoy.locator("[data-col=verdict]").inner_text()
        assert page.locator("textarea, input:not([type=hidden])").evaluate_all(
            "els => els.filter(el => el.labels.length === 0).length") == 0
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-metrics.png"), full_page=True)
        # a bad window: the page says which field, and the fix
        answer = page.goto(base + "/metrics?observe=soon")
        assert answer is not None and answer.status == 400
        assert "observe 'soon' is not a duration" in page.get_by_role("alert").inner_text()
        errors[:] = [e for e in errors if "400" not in e]  # the refused page itself
        assert not errors, f"console errors: {errors}"
    finally:
        page.context.close()


def test_dashboard_metrics_page_is_fast(served: Served) -> None:
    refused = httpx.get(served.server.url + "/metrics")
    assert refused.status_code == 303 and refused.headers["location"] == "/sign-in?next=/metrics"
    with httpx.Client(base_url=served.server.url) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/sign-in").text)
        assert csrf is not None
        sign_in = {"csrf": csrf.group(1), "token": served.read_token, "next": "/"}
        signed = client.post("/sign-in", data=sign_in)
        assert signed.status_code == 303
        client.get("/metrics")  # warm: first queries, templates
        started = time.perf_counter()
        answer = client.get("/metrics", params={"observe": "14d", "predict": "30d"})
        elapsed = time.perf_counter() - started
    assert answer.status_code == 200 and "metrics-table" in answer.text
    assert elapsed < 1.5, f"the metrics page took {elapsed:.2f} s"
