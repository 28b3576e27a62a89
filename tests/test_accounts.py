"""Dashboard accounts with two-factor sign-in, in a real Chromium against `seamline serve`.

Each person is invited through the real CLI (which goes through the running server),
enrols in the browser (password, then the TOTP secret read off the page, confirmed
with a code this test computes with pyotp), and signs in with codes computed the same
way. Screenshots go to tests/artifacts/accounts-*.png; figures to
tests/artifacts/accounts.json.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from conftest import ARTIFACTS, Server
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
PASSWORD = "violet lantern harbour 42"
WRONG = "Wrong email, password or code"
LOCKED = "Too many failed sign-ins: this account is locked"
FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: these tests need Debian's chromium at /usr/bin/"
                    "chromium (`apt-get install -y chromium`).", pytrace=False)  # fmt: skip
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("accounts") / "workspace")
    srv.env = {"SEAMLINE_SIGN_IN_MAX_FAILURES": "5", "SEAMLINE_SIGN_IN_IP_MAX_FAILURES": "1000"}
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "accounts.json").write_text(json.dumps(FIGURES, indent=2, sort_keys=True))


@dataclass
class Person:
    email: str
    role: str
    link: str = ""
    secret: str = ""
    codes: list[str] = field(default_factory=list)

    def code(self, offset: int = 30) -> str:
        """A code of the next time step (the window accepts it; the enrolment used this one)."""
        return pyotp.TOTP(self.secret).at(time.time() + offset)


def new_page(browser: Browser) -> Page:
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "status of 4" not in msg.text else None)  # fmt: skip
    page.errors = errors  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"accounts-{name}.png"), full_page=True)


def invite(server: Server, email: str, role: str) -> str:
    result = server.cli("accounts", "invite", email, "--role", role)
    assert result["email"] == email and result["role"] == role
    assert result["link"].startswith(server.url + "/invite/"), result["link"]
    return str(result["link"])


def enrol(browser: Browser, server: Server, email: str, role: str,
          screenshots: bool = False) -> Person:  # fmt: skip
    """Invite by CLI, then accept in the browser: password, TOTP, recovery codes."""
    person = Person(email, role, invite(server, email, role))
    page = new_page(browser)
    page.goto(person.link)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    if screenshots:
        shot(page, "invite-password")
    page.get_by_role("button", name="Set password").click()
    page.wait_for_selector("#totp-secret")
    assert page.locator("figure.qr svg path").count() >= 1, "no QR code drawn"
    person.secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", person.secret), person.secret
    if screenshots:
        shot(page, "invite-totp")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(person.secret).now())
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_selector("#recovery-codes")
    person.codes = [c.strip() for c in page.locator("#recovery-codes li").all_inner_texts()]
    assert len(person.codes) == 10 and len(set(person.codes)) == 10
    if screenshots:
        shot(page, "invite-recovery-codes")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()
    return person


def sign_in(page: Page, server: Server, email: str, password: str, code: str,
            path: str = "/") -> int:  # fmt: skip
    """Fill the account form on /sign-in; returns the status of the page it lands on."""
    page.goto(server.url + f"/sign-in?next={path}")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Authentication code").fill(code)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Log in").click()
    response = navigation.value
    return response.status if response else 0


def audit(server: Server, action: str | None = None) -> list[dict[str, Any]]:
    args = ["accounts", "audit", "--limit", "1000"] + (["--action", action] if action else [])
    return list(server.cli(*args))


def alert_text(page: Page) -> str:
    return page.locator(".alert").first.inner_text()


# -- enrolment ---------------------------------------------------------------------------
def test_invite_enrol_and_sign_in_with_a_totp_code(browser: Browser, server: Server) -> None:
    ana = enrol(browser, server, "ana@example.com", "analyst", screenshots=True)
    page = new_page(browser)
    started = time.perf_counter()
    assert sign_in(page, server, ana.email, PASSWORD, ana.code(), "/sources") == 200
    FIGURES["sign_in_seconds"] = round(time.perf_counter() - started, 3)
    assert page.url == server.url + "/sources"
    assert "ana@example.com" in page.locator(".who").inner_text()
    assert "(analyst)" in page.locator(".who").inner_text()
    assert page.locator("a[href='/admin/accounts']").count() == 0  # no admin link
    shot(page, "signed-in")
    # the invite link is spent
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server.url + "/sign-in")
    page.goto(ana.link)  # the invite link is spent: to sign-in, which says so
    assert page.url == server.url + "/sign-in?invite=invalid"
    assert "already used or expired" in page.locator("#invite-invalid").inner_text()
    assert httpx.get(ana.link).status_code == 303
    # an analyst may not use the admin forms
    assert sign_in(page, server, ana.email, PASSWORD, ana.codes[0]) == 200
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    answer = page.request.post(server.url + "/admin/tokens",
                               form={"csrf": csrf, "name": "sneaky", "scope": "admin"})
    assert answer.status == 403 and "needs the admin role" in answer.text()
    assert "sneaky" not in {t["name"] for t in server.cli("tokens", "list")}
    listed = {a["email"]: a for a in server.cli("accounts", "list")}
    assert listed["ana@example.com"]["status"] == "active"
    assert listed["ana@example.com"]["last_sign_in_at"]
    entries = audit(server)
    actions = [(e["action"], e["subject"]) for e in entries]
    assert ("account.invite", ana.email) in actions
    assert ("account.activate", ana.email) in actions
    ok = [e for e in entries if e["action"] == "sign_in.ok" and e["subject"] == ana.email]
    assert [e["detail"]["factor"] for e in ok] == ["recovery code", "totp"]
    assert {e["ip"] for e in ok} == {"127.0.0.1"}


def test_the_enrolment_refuses_a_short_password_and_a_wrong_code(browser: Browser,
                                                                  server: Server) -> None:
    page = new_page(browser)
    page.goto(invite(server, "bo@example.com", "viewer"))
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Password again").fill("short")
    page.locator("#new-password").evaluate("e => e.removeAttribute('minlength')")
    page.locator("#confirm-password").evaluate("e => e.removeAttribute('minlength')")
    page.get_by_role("button", name="Set password").click()
    assert "at least 12 characters" in alert_text(page)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD + "!")
    page.get_by_role("button", name="Set password").click()
    assert "The two passwords differ" in alert_text(page)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    secret = page.locator("#totp-secret").inner_text().strip()
    good = pyotp.TOTP(secret).now()
    page.get_by_label("Code from the app").fill(f"{(int(good) + 1) % 1_000_000:06d}")
    page.get_by_role("button", name="Confirm").click()
    assert "does not match" in alert_text(page)
    shot(page, "enrol-wrong-code")
    status = {a["email"]: a["status"] for a in server.cli("accounts", "list")}
    assert status["bo@example.com"] == "invited"  # not active without a confirmed code
    page.context.close()


# -- sign-in -----------------------------------------------------------------------------
def test_a_wrong_code_and_a_replayed_code_are_refused(browser: Browser, server: Server) -> None:
    cy = enrol(browser, server, "cy@example.com", "viewer")
    page = new_page(browser)
    code = cy.code()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert sign_in(page, server, cy.email, PASSWORD, wrong) == 401
    assert WRONG in alert_text(page)
    assert page.url.startswith(server.url + "/sign-in") or page.url == server.url + "/sign-in"
    assert sign_in(page, server, cy.email, PASSWORD, code) == 200
    assert page.url == server.url + "/"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server.url + "/sign-in")
    # the same code again, within its 90-second window: refused
    assert sign_in(page, server, cy.email, PASSWORD, code) == 401
    assert WRONG in alert_text(page)
    shot(page, "replayed-code")
    reasons = [e["detail"]["reason"] for e in audit(server, "sign_in.failed")
               if e["subject"] == cy.email]  # fmt: skip
    assert "wrong code" in reasons and "replayed code" in reasons


def test_lockout_after_repeated_failures_says_the_same_for_unknown_emails(
        browser: Browser, server: Server) -> None:  # fmt: skip
    di = enrol(browser, server, "di@example.com", "viewer")
    page = new_page(browser)
    statuses = [sign_in(page, server, di.email, "not the password", di.code())
                for _ in range(5)]  # fmt: skip
    assert statuses == [401, 401, 401, 401, 429]
    known = alert_text(page)
    assert LOCKED in known
    # now even the right password and a valid code are refused until the lock ends
    assert sign_in(page, server, di.email, PASSWORD, di.code()) == 429
    assert LOCKED in alert_text(page)
    shot(page, "locked")
    unknown = [sign_in(page, server, "nobody@example.com", "guess", "123456")
               for _ in range(5)]  # fmt: skip
    assert unknown == statuses  # an email with no account is answered alike
    assert alert_text(page) == known
    listed = {a["email"]: a for a in server.cli("accounts", "list")}
    assert listed[di.email]["locked_until"]
    locked = [e for e in audit(server, "sign_in") if e["subject"] == di.email]
    assert sum(e["action"] == "sign_in.failed" for e in locked) == 5
    assert any(e["action"] == "sign_in.locked" for e in locked)
    assert any(e["detail"].get("locked") for e in locked if e["action"] == "sign_in.failed")


def test_a_recovery_code_works_once(browser: Browser, server: Server) -> None:
    ed = enrol(browser, server, "ed@example.com", "viewer")
    page = new_page(browser)
    recovery = ed.codes[3]
    assert sign_in(page, server, ed.email, PASSWORD, recovery.upper()) == 200
    assert page.url == server.url + "/"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(server.url + "/sign-in")
    assert sign_in(page, server, ed.email, PASSWORD, recovery) == 401
    assert WRONG in alert_text(page)
    assert sign_in(page, server, ed.email, PASSWORD, ed.codes[4]) == 200
    factors = [e["detail"]["factor"] for e in audit(server, "sign_in.ok")
               if e["subject"] == ed.email]  # fmt: skip
    assert factors == ["recovery code", "recovery code"]


# -- roles -------------------------------------------------------------------------------
ADMIN_PAGES = ("/admin/accounts", "/admin/tokens", "/admin/audit")


def test_a_viewer_cannot_reach_admin_pages(browser: Browser, server: Server) -> None:
    fay = enrol(browser, server, "fay@example.com", "viewer")
    page = new_page(browser)
    assert sign_in(page, server, fay.email, PASSWORD, fay.code()) == 200
    for path in ADMIN_PAGES:
        response = page.goto(server.url + path)
        assert response is not None and response.status == 403, path
        assert "needs the admin role" in alert_text(page)
    shot(page, "viewer-forbidden")
    # a forged admin form from the viewer's own session: 403 as well, nothing invited
    page.goto(server.url + "/")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    answer = page.request.post(server.url + "/admin/accounts/invite",
                               form={"csrf": csrf or "", "email": "x@example.com",
                                     "role": "admin"})  # fmt: skip
    assert answer.status == 403 and "needs the analyst role" in answer.text()
    assert "x@example.com" not in {a["email"] for a in server.cli("accounts", "list")}
    answer = page.request.post(server.url + "/sources",
                               form={"csrf": csrf or "", "name": "evil", "channel": "web"})
    assert answer.status == 403


def test_admin_manages_accounts_in_the_dashboard_and_a_disabled_account_is_signed_out(
        browser: Browser, server: Server) -> None:  # fmt: skip
    gus = enrol(browser, server, "gus@example.com", "admin")
    hal = enrol(browser, server, "hal@example.com", "viewer")
    admin = new_page(browser)
    assert sign_in(admin, server, gus.email, PASSWORD, gus.code(), "/admin/accounts") == 200
    other = new_page(browser)
    assert sign_in(other, server, hal.email, PASSWORD, hal.code()) == 200
    # invite from the dashboard: the link is shown once
    admin.get_by_label("Email").fill("ivy@example.com")
    admin.get_by_label("Role", exact=True).select_option("analyst")
    admin.get_by_role("button", name="Invite").click()
    link = admin.locator("#invite-link").inner_text()
    assert link.startswith(server.url + "/invite/")
    assert httpx.get(link).status_code == 200
    shot(admin, "admin-accounts")
    # role change applies to hal's open session at once
    admin.get_by_label("Role of hal@example.com", exact=True).select_option("analyst")
    admin.get_by_role("button", name="Change role of hal@example.com").click()
    assert "is now analyst" in admin.locator(".notice").inner_text()
    other.goto(server.url + "/")
    assert "(analyst)" in other.locator(".who").inner_text()
    # disable: hal's next request goes to the sign-in page
    admin.get_by_role("button", name="Disable hal@example.com").click()
    assert "disabled" in admin.locator(".notice").inner_text()
    other.goto(server.url + "/journeys")
    assert other.url.startswith(server.url + "/sign-in")
    assert sign_in(other, server, hal.email, PASSWORD, hal.codes[0]) == 401
    actions = [(e["action"], e["actor"], e["subject"]) for e in audit(server, "account.")]
    assert ("account.invite", gus.email, "ivy@example.com") in actions
    assert ("account.role", gus.email, hal.email) in actions
    assert ("account.disable", gus.email, hal.email) in actions
    admin.goto(server.url + "/admin/audit")
    assert admin.locator("#audit tbody tr").count() >= 10
    shot(admin, "admin-audit")


def test_a_token_created_in_the_dashboard_works_and_revoking_it_ends_its_sessions(
        browser: Browser, server: Server) -> None:  # fmt: skip
    jo = enrol(browser, server, "jo@example.com", "admin")
    admin = new_page(browser)
    assert sign_in(admin, server, jo.email, PASSWORD, jo.code(), "/admin/tokens") == 200
    admin.get_by_label("Name").fill("robot")
    admin.get_by_label("Scope").select_option("read")
    admin.get_by_role("button", name="Create token").click()
    token = admin.locator("#new-token").inner_text().strip()
    assert token.startswith("sl_sk_")
    shot(admin, "admin-token-created")
    admin.reload()  # shown once: not on the page again
    assert token not in admin.content()
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(server.url + "/api/stats", headers=headers).status_code == 200
    # a dashboard session signed in with that token
    machine = new_page(browser)
    machine.goto(server.url + "/sign-in")
    machine.get_by_label("API token").fill(token)
    machine.get_by_role("button", name="Sign in").click()
    machine.wait_for_url(server.url + "/")
    assert "robot" in machine.locator(".who").inner_text()
    # revoke in the dashboard: the API refuses it and its session ends at once
    admin.get_by_role("button", name="Revoke robot").click()
    assert "Revoked 1 token(s) named robot" in admin.locator(".notice").inner_text()
    assert httpx.get(server.url + "/api/stats", headers=headers).status_code == 401
    started = time.perf_counter()
    machine.goto(server.url + "/seams")
    assert machine.url.startswith(server.url + "/sign-in?next=/seams")
    FIGURES["revoked_session_redirect_seconds"] = round(time.perf_counter() - started, 3)
    entries = [(e["action"], e["actor"], e["subject"]) for e in audit(server, "token.")]
    assert ("token.create", jo.email, "robot") in entries
    assert ("token.revoke", jo.email, "robot") in entries
    assert any(e["detail"].get("factor") == "api token" for e in audit(server, "sign_in.ok"))


def test_the_audit_log_holds_every_kind_of_entry(server: Server) -> None:
    entries = audit(server)
    kinds = {e["action"] for e in entries}
    expected = {"account.invite", "account.activate", "account.role", "account.disable",
                "sign_in.ok", "sign_in.failed", "sign_in.locked", "token.create",
                "token.revoke"}  # fmt: skip
    assert expected <= kinds, expected - kinds
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)
    FIGURES["audit_entries"] = len(entries)
    FIGURES["audit_actions"] = sorted(kinds)
    raw = (server.data / "seamline.duckdb").read_bytes()
    assert PASSWORD.encode() not in raw  # argon2 hashes only


# -- throttling and expiry (a server of their own: they block the address) ---------------
def test_per_address_throttle_and_idle_expiry(tmp_path: Path) -> None:
    srv = Server(tmp_path / "workspace")
    srv.env = {"SEAMLINE_SIGN_IN_IP_MAX_FAILURES": "3", "SEAMLINE_SESSION_IDLE_SECONDS": "2"}
    srv.start()
    try:
        token = srv.cli("tokens", "add", "me", "--scope", "read")["token"]
        with httpx.Client(base_url=srv.url) as client:
            assert _token_sign_in(client, token).status_code == 303
            assert client.get("/").status_code == 200
            time.sleep(2.5)  # idle longer than the setting: the session is gone
            assert client.get("/").status_code == 303
        with httpx.Client(base_url=srv.url) as client:
            statuses = [_token_sign_in(client, "sl_sk_wrong").status_code for _ in range(3)]
            assert statuses == [401, 401, 401]
            refused = _token_sign_in(client, token)  # even the right token, for a while
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
            assert "from this address" in refused.text
            answer = _account_sign_in(client, "someone@example.com")
            assert answer.status_code == 429
    finally:
        srv.stop()


def _token_sign_in(client: httpx.Client, token: str) -> httpx.Response:
    form = client.get("/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    return client.post("/sign-in", data={"csrf": csrf.group(1), "token": token, "next": "/"})


def _account_sign_in(client: httpx.Client, email: str) -> httpx.Response:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/sign-in").text)
    assert csrf
    return client.post("/sign-in", data={"csrf": csrf.group(1), "email": email,
                                          "password": "x" * 12, "code": "123456"})
