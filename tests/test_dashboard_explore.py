"""The Paths and Retention pages, and the result cache seen from the browser.

Real `seamline serve`, real Chromium (Debian's, via Playwright's executable_path). The
small workspace of tests/test_dashboard.py has known journeys: u1 Signup Started -> Plan
Chosen -> Signup Completed (then a Pricing page on the web), u2 the first two steps, u3
only the first, u4 only Plan Chosen. The numbers on the pages are checked against those
and against the JSON API (the same Workspace.paths / Workspace.retention calls).
Screenshots: tests/artifacts/dashboard-paths*.png, dashboard-retention*.png.
"""

# ruff: noqa: F811 - the imported fixtures below are used as test parameters, as pytest does
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Server
from playwright.sync_api import Browser, expect

# the same module-scoped workspaces and browser as tests/test_dashboard.py (one per module)
from test_dashboard import (  # noqa: F401
    STEPS,
    Served,
    Tab,
    _events,
    assert_accessible,
    assert_chart,
    browser,
    demo,
    open_tab,
    signed_in_client,
    small,
)


def sign_in(tab: Tab, token: str) -> None:
    """Through the API-token form of the sign-in page, as a person does."""
    tab.goto("/")
    tab.page.get_by_role("textbox", name="API token", exact=True).fill(token)
    tab.page.get_by_role("button", name="Sign in", exact=True).click()
    tab.page.wait_for_load_state()
    expect(tab.page.get_by_role("navigation", name="Main")).to_be_visible()


def api(served: Served, path: str, **params: Any) -> Any:
    answer = httpx.get(served.server.url + path, params=params, timeout=60,
                       headers={"Authorization": f"Bearer {served.read_token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture
def tab(browser: Browser, small: Served) -> Iterator[Tab]:
    opened = open_tab(browser, small.server, viewport={"width": 1280, "height": 900})
    sign_in(opened, small.read_token)
    yield opened
    opened.page.context.close()


def table_rows(tab: Tab, table: str) -> list[list[str]]:
    return [row.locator("th, td").all_inner_texts()
            for row in tab.page.locator(f"#{table} tbody tr").all()]  # fmt: skip


# -- paths -----------------------------------------------------------------------------------
def test_paths_page_matches_workspace_paths(tab: Tab, small: Served) -> None:
    tab.goto("/paths")
    assert_accessible(tab)
    # the first view: paths after the most common event (Plan Chosen and Signup Started have
    # 3 events each; the name breaks the tie), served by the start-up precompute
    expect(tab.page.get_by_label("Event")).to_have_value("Plan Chosen")
    assert_chart(tab, "paths-chart", "g.point path")
    first_view = api(small, "/api/paths", event="Plan Chosen")
    assert [row[2] for row in table_rows(tab, "paths-table")] == [
        str(p["people"]) for p in first_view["paths"]]  # fmt: skip
    tab.page.get_by_label("Event").select_option("")
    tab.page.get_by_role("button", name="Show paths").click()
    expect(tab.page.get_by_text("Choose an event to see where")).to_be_visible()
    # keyboard only: labels lead to the fields, Enter submits the form
    tab.page.get_by_label("Event").select_option(STEPS[0])
    tab.page.get_by_label("Steps").fill("3")
    tab.page.get_by_label("Steps").press("Enter")
    tab.page.wait_for_url(re.compile(r"/paths\?event=Signup\+Started"))
    assert_chart(tab, "paths-chart", "g.point path")
    expected = api(small, "/api/paths", event=STEPS[0], steps=3)
    assert expected["people"] == 3  # u1, u2, u3 did Signup Started; u4 never did
    shown = table_rows(tab, "paths-table")
    assert [(row[1], row[2]) for row in shown] == [
        (" → ".join(p["path"]), f"{p['people']:,}") for p in expected["paths"]]  # fmt: skip
    assert {row[1] for row in shown} == {
        "Signup Started → Plan Chosen → Signup Completed → Pricing",
        "Signup Started → Plan Chosen", "Signup Started"}  # fmt: skip
    assert all(row[3] == "33.3%" for row in shown)
    expect(tab.page.locator("#paths-summary")).to_contain_text("3 people did Signup Started")
    expect(tab.page.locator(".as-of")).to_contain_text("UTC")
    tab.shot("paths")
    tab.assert_clean()


def test_paths_before_an_event(tab: Tab, small: Served) -> None:
    tab.goto("/paths?event=Signup+Completed&direction=before&steps=2")
    assert_chart(tab, "paths-chart", "g.point path")
    expected = api(small, "/api/paths", event="Signup Completed", direction="before", steps=2)
    rows = table_rows(tab, "paths-table")
    assert [row[1] for row in rows] == ["Signup Started → Plan Chosen → Signup Completed"]
    assert rows[0][2] == str(expected["paths"][0]["people"]) == "1"
    tab.assert_clean()


def test_paths_form_errors_name_the_field(small: Served) -> None:
    with signed_in_client(small.server, small.read_token) as client:
        answer = client.get("/paths", params={"event": STEPS[0], "steps": "lots"})
        assert answer.status_code == 400
        assert "&#39;steps&#39; must be a whole number from 1 to 20" in answer.text
        answer = client.get("/paths", params={"event": STEPS[0], "direction": "sideways"})
        assert answer.status_code == 400 and "direction" in answer.text
        assert "Traceback" not in answer.text


# -- retention ---------------------------------------------------------------------------
def test_retention_page_matches_workspace_retention(tab: Tab, small: Served) -> None:
    tab.goto("/retention")
    assert_accessible(tab)
    assert_chart(tab, "retention-chart", "g.hm image")
    expected = api(small, "/api/retention")
    assert expected["people"] == 4  # every user has a touchpoint
    # u1 and u2 came back (a later touchpoint), u3 and u4 did one thing each
    assert sum(sum(c["retained"]) for c in expected["cohorts"]) == 2
    rows = table_rows(tab, "retention-table")
    assert len(rows) == len(expected["cohorts"])
    for row, cohort in zip(rows, expected["cohorts"], strict=True):
        assert row[0] == cohort["cohort"] and row[1] == str(cohort["people"])
        for k in range(cohort["periods_observed"]):
            assert row[2 + k].startswith(f"{cohort['retained'][k]} (")
    tab.shot("retention")
    tab.assert_clean()


def test_retention_by_day_with_events_chosen(tab: Tab, small: Served) -> None:
    tab.goto("/retention")
    tab.page.get_by_label("Start event").select_option(STEPS[0])
    tab.page.get_by_label("Return event").select_option(STEPS[2])
    tab.page.get_by_label("Period", exact=True).select_option("day")
    tab.page.get_by_label("Periods").fill("3")
    tab.page.get_by_role("button", name="Show retention").click()
    tab.page.wait_for_url(re.compile(r"/retention\?.*period=day"))
    expected = api(small, "/api/retention", start_event=STEPS[0], return_event=STEPS[2],
                   period="day", periods=3)  # fmt: skip
    assert expected["people"] == 3
    assert sum(sum(c["retained"]) for c in expected["cohorts"]) == 1  # only u1 completed
    rows = table_rows(tab, "retention-table")
    assert [row[1] for row in rows] == [str(c["people"]) for c in expected["cohorts"]]
    assert_chart(tab, "retention-chart", "g.hm image")
    tab.assert_clean()


def test_demo_paths_and_retention_render(browser: Browser, demo: Served) -> None:
    opened = open_tab(browser, demo.server, viewport={"width": 1280, "height": 900})
    sign_in(opened, demo.read_token)
    try:
        opened.goto("/paths?event=App+Opened&steps=3&top=10")
        bars = assert_chart(opened, "paths-chart", "g.point path")
        rows = table_rows(opened, "paths-table")
        assert bars == len(rows) >= 2  # one bar per path in the table
        assert sum(int(row[2].replace(",", "")) for row in rows) <= 100  # 100 demo customers
        opened.shot("paths-demo")
        opened.goto("/retention")
        assert_chart(opened, "retention-chart", "g.hm image")
        opened.shot("retention-demo")
        opened.assert_clean()
    finally:
        opened.page.context.close()


def test_navigation_links_reach_the_new_pages(tab: Tab) -> None:
    tab.goto("/")
    nav = tab.page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Paths").click()
    expect(tab.page.get_by_role("heading", level=1)).to_have_text("Paths")
    expect(nav.get_by_role("link", name="Paths")).to_have_attribute("aria-current", "page")
    nav.get_by_role("link", name="Retention").focus()
    tab.page.keyboard.press("Enter")
    expect(tab.page.get_by_role("heading", level=1)).to_have_text("Retention")
    tab.assert_clean()


# -- the cache never hides a write ---------------------------------------------------------
def test_imported_events_show_at_once(browser: Browser, tmp_path: Path) -> None:
    server = Server(tmp_path / "workspace").start()
    try:
        key = server.add_source("app", "mobile")
        token = server.cli("tokens", "add", "reader", "--scope", "read")["token"]
        assert httpx.post(server.url + "/v1/batch", auth=(key, ""),
                          json={"batch": _events()}).status_code == 200  # fmt: skip
        opened = open_tab(browser, server)
        sign_in(opened, token)
        try:
            expect(opened.page.locator("[data-stat=events]")).to_have_text("7")
            opened.goto("/paths?event=Plan+Chosen&steps=1")
            assert len(table_rows(opened, "paths-table")) == 2  # -> Signup Completed, or end
            opened.goto("/")  # a second view, no write between: from the cache
            expect(opened.page.locator("[data-stat=events]")).to_have_text("7")
            fresh = [{"type": "track", "event": "Plan Chosen", "userId": "u9",
                      "messageId": "u9-0"}, {"type": "track", "event": "Refund Asked",
                      "userId": "u9", "messageId": "u9-1"}]  # fmt: skip
            assert httpx.post(server.url + "/v1/batch", auth=(key, ""),
                              json={"batch": fresh}).status_code == 200  # fmt: skip
            opened.page.reload()
            expect(opened.page.locator("[data-stat=events]")).to_have_text("9")
            opened.goto("/paths?event=Plan+Chosen&steps=1")
            paths = [row[1] for row in table_rows(opened, "paths-table")]
            assert "Plan Chosen → Refund Asked" in paths
            # every analysis page says how old its (cached) results are
            funnel = "/funnel?steps=Signup+Started&steps=Plan+Chosen"
            for path in ("/", "/journeys", "/seams", funnel, "/paths", "/retention"):
                opened.goto(path)
                expect(opened.page.locator(".as-of")).to_contain_text(
                    re.compile(r"As of \d\d:\d\d:\d\d UTC"))  # fmt: skip
            opened.assert_clean()
        finally:
            opened.page.context.close()
    finally:
        server.stop()
