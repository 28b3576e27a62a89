"""The web dashboard in a real headless Chromium against a real `seamline serve`.

Two workspaces: a small one with a handful of known events (exact funnel counts, person
lookup, live events, access rules) and `seamline demo --people 100` for the chart pages.
Chromium is Debian's (`apt-get install chromium`; `bin/dev test` installs it when run as
root); Playwright only drives it. Screenshots go to tests/artifacts/dashboard-*.png.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ARTIFACTS, Server, run_cli
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
STEPS = ("Signup Started", "Plan Chosen", "Signup Completed")


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: the dashboard tests need Debian's chromium at "
                    "/usr/bin/chromium (`apt-get install -y chromium`, or run `bin/dev test` "
                    "as root, which installs it).", pytrace=False)  # fmt: skip
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@dataclass
class Served:
    """A running server with its tokens."""

    server: Server
    read_token: str
    admin_token: str
    write_key: str = ""


def _events() -> list[dict[str, Any]]:
    """u1 does all three steps (and visits the website), u2 two, u3 one, u4 only step 2."""
    start = datetime.now(UTC) - timedelta(hours=6)
    journeys = {"u1": STEPS, "u2": STEPS[:2], "u3": STEPS[:1], "u4": STEPS[1:2]}
    events = []
    for user, steps in journeys.items():
        for minute, step in enumerate(steps):
            stamp = (start + timedelta(minutes=minute * 5)).isoformat()
            events.append({"type": "track", "event": step, "userId": user,
                           "messageId": f"{user}-{minute}", "timestamp": stamp})  # fmt: skip
    return events


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = Server(tmp_path_factory.mktemp("small") / "workspace").start()
    try:
        key = server.add_source("app", "mobile", "retail")
        web_key = server.add_source("site", "web")
        response = httpx.post(server.url + "/v1/batch", auth=(key, ""),
                              json={"batch": _events()})  # fmt: skip
        assert response.status_code == 200, response.text
        visit = {"type": "page", "name": "Pricing", "userId": "u1", "messageId": "web-1"}
        assert httpx.post(server.url + "/v1/page", auth=(web_key, ""), json=visit).is_success
        yield Served(server, server.cli("tokens", "add", "reader", "--scope", "read")["token"],
                        server.admin_token(), key)  # fmt: skip
    finally:
        server.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("demo") / "workspace"
    built = run_cli(data, "demo", "--no-serve", "--people", "100")
    server = Server(data).start()
    try:
        yield Served(server, built["read_token"], server.admin_token())
    finally:
        server.stop()


@dataclass
class Tab:
    """A browser page that records console errors and every URL it requests."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def sign_in(self, token: str, path: str = "/") -> None:
        self.goto(path)
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        foreign = [url for url in self.requests if not url.startswith(self.base)]
        assert not foreign, f"requests left the server (no CDN allowed): {foreign}"


def open_tab(browser: Browser, server: Server, **context: Any) -> Tab:
    page = browser.new_context(**context).new_page()
    tab = Tab(page, server.url)
    page.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    page.on("request", lambda request: tab.requests.append(request.url))
    page.on("response", lambda response: tab.errors.append(
        f"{response.status} for {response.url}") if response.status >= 400 else None)  # fmt: skip
    return tab


@pytest.fixture
def reader(browser: Browser, demo: Served) -> Iterator[Tab]:
    tab = open_tab(browser, demo.server, viewport={"width": 1280, "height": 900})
    tab.sign_in(demo.read_token)
    yield tab
    tab.page.context.close()


@contextmanager
def signed_in_client(server: Server, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        csrf = csrf_of(client.get("/sign-in").text)
        answer = client.post("/sign-in", data={"csrf": csrf, "token": token, "next": "/"})
        assert answer.status_code == 303, answer.text
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


# -- helpers -----------------------------------------------------------------------------
def assert_chart(tab: Tab, chart_id: str, marks: str) -> int:
    """The chart rendered as Plotly SVG with data: returns how many ``marks`` it drew."""
    tab.page.wait_for_selector(f"#{chart_id}[data-rendered='true']", timeout=20_000)
    assert tab.page.locator(f"#{chart_id} svg.main-svg").count() >= 1
    count = tab.page.locator(f"#{chart_id} {marks}").count()
    assert count > 0, f"chart {chart_id} drew no {marks}"
    return count


def assert_accessible(tab: Tab) -> None:
    page = tab.page
    assert page.evaluate("document.documentElement.lang") == "en"
    assert page.locator("meta[name=viewport]").count() == 1
    assert page.locator("h1").count() == 1
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden]), select')]"
        ".filter(el => el.labels.length === 0).map(el => el.name || el.id)"
    )
    assert not unlabelled, f"inputs without a label: {unlabelled}"


# -- access --------------------------------------------------------------------------------
PAGES = ["/", "/journeys", "/funnel", "/seams", "/person", "/live", "/sources", "/live/stream"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_sign_in(small: Served, path: str) -> None:
    answer = httpx.get(small.server.url + path)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/sign-in?next={path}"


def test_apis_never_redirect(small: Served) -> None:
    base = small.server.url
    assert httpx.post(base + "/v1/track", json={"event": "x"}).status_code == 400
    assert httpx.get(base + "/api/stats").status_code == 401
    assert httpx.get(base + "/openapi.json").status_code == 200


def test_sign_in_lands_on_the_page_asked_for(browser: Browser, small: Served) -> None:
    tab = open_tab(browser, small.server)
    tab.goto("/journeys?lane=unit")
    assert "/sign-in?next=" in tab.page.url
    assert_accessible(tab)
    tab.shot("sign-in")
    tab.page.get_by_label("API token").fill(small.read_token)
    tab.page.get_by_role("button", name="Sign in").click()
    expect(tab.page.get_by_role("heading", level=1)).to_have_text("Journeys")
    assert tab.page.url.endswith("/journeys?lane=unit")
    cookie = next(c for c in tab.page.context.cookies() if c["name"] == "seamline_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    tab.assert_clean()
    tab.page.get_by_role("button", name="Sign out").click()
    expect(tab.page.get_by_label("API token")).to_be_visible()
    tab.goto("/")
    assert "/sign-in" in tab.page.url  # the session is gone
    tab.page.context.close()


def test_write_key_is_refused(browser: Browser, small: Served) -> None:
    tab = open_tab(browser, small.server)
    tab.goto("/")
    tab.page.get_by_label("API token").fill(small.write_key)
    tab.page.get_by_role("button", name="Sign in").click()
    expect(tab.page.get_by_role("alert")).to_contain_text("write key")
    assert "/sign-in" in tab.page.url
    assert not [c for c in tab.page.context.cookies() if c["name"] == "seamline_session"]
    tab.shot("sign-in-write-key")
    tab.page.context.close()
    with httpx.Client(base_url=small.server.url) as client:
        csrf = csrf_of(client.get("/sign-in").text)
        refused = client.post("/sign-in", data={"csrf": csrf, "token": "sl_sk_not-a-token"})
    assert refused.status_code == 401 and "Unknown or revoked" in refused.text


def test_session_cookie_flags(small: Served) -> None:
    with httpx.Client(base_url=small.server.url) as client:
        csrf = csrf_of(client.get("/sign-in").text)
        plain = client.post("/sign-in", data={"csrf": csrf, "token": small.read_token})
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    # behind a TLS proxy on a trusted address (uvicorn trusts 127.0.0.1) the cookie is Secure;
    # httpx keeps Secure cookies for https only, so this test hands the sign-in cookie back
    proxy = {"X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=small.server.url, headers=proxy) as client:
        form = client.get("/sign-in")
        assert "; secure" in form.headers["set-cookie"].lower()
        sign_in_cookie = form.headers["set-cookie"].split(";")[0]
        fields = {"csrf": csrf_of(form.text), "token": small.read_token}
        secure = client.post("/sign-in", headers={"Cookie": sign_in_cookie}, data=fields)
    assert secure.status_code == 303
    assert "; secure" in secure.headers["set-cookie"].lower()


def test_post_without_csrf_is_refused(small: Served) -> None:
    with signed_in_client(small.server, small.admin_token) as client:
        _post_without_csrf(small, client)


def _post_without_csrf(small: Served, client: httpx.Client) -> None:
    assert client.post("/sign-out", data={}).status_code == 403
    assert client.post("/sign-out", data={"csrf": "forged"}).status_code == 403
    refused = client.post("/sources", data={"name": "sneaky", "channel": "web"})
    assert refused.status_code == 403
    assert client.get("/").status_code == 200  # still signed in
    csrf = csrf_of(client.get("/sources").text)
    added = client.post("/sources", data={"csrf": csrf, "name": "kiosk", "channel": "store"})
    assert added.status_code == 303
    names = {source["name"] for source in small.server.cli("sources", "list")}
    assert "kiosk" in names and "sneaky" not in names
    # the sign-in form is guarded too (double-submit cookie)
    with httpx.Client(base_url=small.server.url) as fresh:
        assert fresh.post("/sign-in", data={"token": small.read_token}).status_code == 403
    assert client.post("/sign-out", data={"csrf": csrf}).status_code == 303
    assert client.get("/").status_code == 303


def test_reader_sees_no_tokens_admin_does(browser: Browser, small: Served) -> None:
    with signed_in_client(small.server, small.read_token) as client:
        reader = client.get("/sources")
    assert "write key" in reader.text and 'id="tokens"' not in reader.text
    assert small.write_key in reader.text
    tab = open_tab(browser, small.server, viewport={"width": 1280, "height": 900})
    tab.sign_in(small.admin_token, "/sources")
    expect(tab.page.locator("#tokens")).to_contain_text("reader")
    assert_accessible(tab)
    tab.shot("sources")
    tab.assert_clean()
    tab.page.context.close()


# -- pages on the small workspace -----------------------------------------------------------
def test_funnel_builder_counts(browser: Browser, small: Served) -> None:
    tab = open_tab(browser, small.server, viewport={"width": 1280, "height": 900})
    tab.sign_in(small.read_token, "/funnel")
    for index, step in enumerate(STEPS, start=1):
        tab.page.get_by_label(f"Step {index}", exact=True).select_option(step)
    tab.page.get_by_label("Window from step 1").fill("1d")
    tab.page.get_by_role("button", name="Show funnel").click()
    people = tab.page.locator("#funnel-steps td[data-col=people]").all_inner_texts()
    assert people == ["3", "2", "1"]
    assert tab.page.locator("#funnel-steps tbody tr").nth(1).inner_text().count("66.7%") == 2
    assert assert_chart(tab, "funnel-chart", ".bars .point") == 3
    tab.page.get_by_label("Breakdown field").fill("channel")
    tab.page.get_by_role("button", name="Show funnel").click()
    expect(tab.page.locator("#funnel-breakdown")).to_contain_text("mobile")
    assert_accessible(tab)
    tab.assert_clean()
    tab.page.context.close()


def test_person_lookup_shows_cross_channel_timeline(browser: Browser, small: Served) -> None:
    tab = open_tab(browser, small.server, viewport={"width": 1280, "height": 900})
    tab.sign_in(small.read_token, "/person")
    tab.page.get_by_label("Identifier").fill("u1")
    tab.page.get_by_role("button", name="Look up").click()
    expect(tab.page.locator("#identities")).to_contain_text("u1")
    timeline = tab.page.locator("#timeline").inner_text()
    assert all(step in timeline for step in STEPS) and "Pricing" in timeline
    assert assert_chart(tab, "person-chart", ".scatterlayer .point") == 4
    tab.page.get_by_label("Identifier").fill("nobody-here")
    tab.page.get_by_role("button", name="Look up").click()
    expect(tab.page.get_by_role("alert")).to_contain_text("No person has the identifier")
    tab.assert_clean()
    tab.page.context.close()


def test_live_page_shows_a_posted_event(browser: Browser, small: Served) -> None:
    tab = open_tab(browser, small.server, viewport={"width": 1280, "height": 900})
    tab.sign_in(small.read_token, "/live")
    expect(tab.page.locator("#live-status")).to_have_attribute("data-state", "open")
    event = {"event": "Live Check", "userId": "live-user", "messageId": "live-1"}
    assert httpx.post(small.server.url + "/v1/track", auth=(small.write_key, ""),
                      json=event).status_code == 200  # fmt: skip
    first = tab.page.locator("#live-events li").first
    expect(first).to_contain_text("Live Check", timeout=10_000)
    expect(first).to_contain_text("live-user")
    expect(tab.page.locator("#live-status")).to_contain_text("1 events received")
    assert_accessible(tab)
    tab.shot("live")
    tab.assert_clean()
    tab.page.context.close()


# -- chart pages on the demo workspace ----------------------------------------------------------
FUNNEL = "/funnel?steps=App+Opened&steps=Login+Succeeded&steps=Payment+Succeeded&within=7d"
CHART_PAGES = [
    ("overview", "/", "outcomes-chart", ".scatterlayer .point"),
    ("journeys", "/journeys", "journey-chart", ".sankey-node"),
    ("funnel", FUNNEL + "&by=os_name", "funnel-chart", ".bars .point"),
]


@pytest.mark.parametrize(("name", "path", "chart", "marks"), CHART_PAGES)
def test_chart_pages_render(reader: Tab, name: str, path: str, chart: str, marks: str) -> None:
    response = reader.goto(path)
    assert response is not None and response.status == 200
    assert_chart(reader, chart, marks)
    assert_accessible(reader)
    reader.shot(name)
    reader.assert_clean()


def test_overview_counts_and_seams(reader: Tab, demo: Served) -> None:
    reader.goto("/")
    stats = httpx.get(reader.base + "/api/stats",
                      headers={"Authorization": f"Bearer {demo.read_token}"}).json()  # fmt: skip
    assert reader.page.locator("[data-stat=events]").inner_text() == f"{stats['events']:,}"
    assert reader.page.locator("[data-stat=persons]").inner_text() == f"{stats['persons']:,}"
    expect(reader.page.locator("[data-stat=contacts_per_person]")).to_have_count(1)
    expect(reader.page.get_by_role("heading", name="Top seams")).to_be_visible()


def test_seams_link_to_the_people_behind_them(reader: Tab) -> None:
    reader.goto("/seams?min_people=2&all=1")
    seams = reader.page.locator("li.seam")
    assert seams.count() >= 1
    assert_accessible(reader)
    reader.shot("seams")
    link = reader.page.locator("a.person-link").first
    link.click()
    expect(reader.page.get_by_role("heading", level=1)).to_have_text("People")
    expect(reader.page.locator("#identities")).to_be_visible()
    assert_chart(reader, "person-chart", ".scatterlayer .point")
    reader.shot("person")
    reader.assert_clean()


def test_phone_layout_stacks(browser: Browser, demo: Served) -> None:
    tab = open_tab(browser, demo.server, viewport={"width": 390, "height": 844},
                   is_mobile=True, has_touch=True)  # fmt: skip
    tab.sign_in(demo.read_token, FUNNEL)
    assert_chart(tab, "funnel-chart", ".bars .point")
    overflow = tab.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow}px wider than a phone screen"
    tab.shot("phone-funnel")
    tab.goto("/")
    assert_chart(tab, "outcomes-chart", ".scatterlayer .point")
    tab.shot("phone-overview")
    tab.assert_clean()
    tab.page.context.close()


def test_keyboard_reaches_the_navigation(reader: Tab) -> None:
    reader.goto("/journeys")
    reader.page.keyboard.press("Tab")
    assert reader.page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(3):  # skip link, brand, then the first navigation links
        reader.page.keyboard.press("Tab")
    focused = reader.page.evaluate("document.activeElement.getAttribute('href')")
    assert focused == "/journeys"
    reader.page.keyboard.press("Enter")
    expect(reader.page.locator("a[aria-current=page]")).to_have_text("Journeys")


def test_plotly_is_served_locally(demo: Served) -> None:
    answer = httpx.get(demo.server.url + "/static/plotly.min.js")
    assert answer.status_code == 200 and b"plotly.js" in answer.content[:200]


# -- shutdown ------------------------------------------------------------------------------
def test_open_live_stream_does_not_hold_shutdown(tmp_path: Path) -> None:
    server = Server(tmp_path / "workspace").start()
    try:
        token = server.cli("tokens", "add", "r", "--scope", "read")["token"]
        with (
            signed_in_client(server, token) as client,
            client.stream("GET", "/live/stream") as stream,
        ):
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            started = time.monotonic()
            code = server.stop(signal.SIGTERM)
            assert code in (0, -signal.SIGTERM), server.log()[-2000:]
            assert time.monotonic() - started < 5, "an open live stream held the shutdown"
    finally:
        if server.proc is not None:
            server.kill()
