"""Who may see the dashboard: sign-in, sessions, roles, CSRF on every POST form.

- Signing in takes an account (email, password and a TOTP or recovery code; see
  :mod:`seamline.accounts` and :mod:`seamline.web.accounts`) or an API token with read
  or admin scope (the same tokens as ``/api``); write keys (``sl_wk_...``) are refused
  with a message saying why. Failed sign-ins are throttled per client address.
- Roles: ``viewer`` sees pages, ``analyst`` (and a read token) may also post the analysis
  forms, ``admin`` (and an admin token) manages sources, tokens, accounts and moments.
  A POST form handler calls :func:`require_role`; a refusal is a ``403`` page.
- On every request the session is checked against the store: a revoked token or a
  disabled account ends it at once, and a changed role applies at once.
- A page without a valid session answers ``303`` to ``/sign-in?next=<page>``. Only the
  dashboard redirects: the collection and JSON APIs never do.
- Every POST form carries the session's CSRF token in a hidden field ``csrf``; the
  sign-in form, used before any session exists, is guarded by a double-submit cookie.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from seamline.accounts import role_allows
from seamline.app import Workspace
from seamline.store import accounts as account_tables
from seamline.store.database import WRITE_KEY_PREFIX
from seamline.web.sessions import (
    COOKIE,
    SIGN_IN_COOKIE,
    Session,
    SessionStore,
    clear_cookie,
    set_cookie,
)

MAX_FORM_BYTES = 64 * 1024
RECHECK_SECONDS = 5.0  # longest a session goes unchecked against the store
Render = Callable[..., Response]


class SignInRequired(Exception):
    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


class FormRefused(Exception):
    """A POST whose CSRF token is missing or wrong (or a form that is not a form)."""


class RoleRefused(Exception):
    """A signed-in user whose role does not allow this page or form (a 403 page)."""

    def __init__(self, needed: str):
        super().__init__(needed)
        self.needed = needed


def require_role(session: Session, needed: str) -> None:
    """Raise :class:`RoleRefused` unless the session's role is at least ``needed``."""
    if not role_allows(session.scope, needed):
        raise RoleRefused(needed)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


def safe_next(value: str | None) -> str:
    """Only paths on this server: never an open redirect to another host."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def viewer_dependency(sessions: SessionStore) -> Callable[[Request], Session]:
    def viewer(request: Request) -> Session:
        request.state.started = time.perf_counter()
        session = sessions.of(request)
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(path)
        if request.method not in ("GET", "HEAD") and not role_allows(session.scope, "analyst"):
            # viewers only look: every dashboard form (run, save, manage) needs an analyst,
            # and the admin forms check for admin on top of this
            raise RoleRefused("analyst")
        return session

    return viewer


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the dashboard's forms send nothing else), first values."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormRefused("expected a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefused("form too large")
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def check_csrf(session: Session, form: dict[str, str]) -> None:
    if not session.csrf_ok(form.get("csrf")):
        raise FormRefused("missing or wrong CSRF token")


def install_access(app: FastAPI, router: APIRouter, workspace: Workspace, sessions: SessionStore,
                   local_secret: str | None, render: Render) -> None:  # fmt: skip
    async def to_sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(f"/sign-in?next={quote(exc.next_path, safe='/')}", 303)

    async def refused(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", None, status=403, title="Form refused",
                      message="This form did not come from this dashboard page, or it has "
                              "expired. Go back, reload the page and try again.")  # fmt: skip

    async def role_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RoleRefused)
        session = sessions.of(request)
        who = f"{session.name} ({session.scope})" if session else "This session"
        return render(request, "error.html", session, status=403, title="Not allowed",
                      message=f"{who} may not do this: it needs the {exc.needed} role. "
                              "Ask an admin to change your role.")  # fmt: skip

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(FormRefused, refused)
    app.add_exception_handler(RoleRefused, role_refused)
    sessions.idle = float(workspace.settings.session_idle_seconds)
    sessions.lifetime = float(workspace.settings.session_lifetime_seconds)
    accounts = workspace.accounts

    def still_valid(session: Session) -> bool:
        """A revoked token or a disabled account ends the session; a new role applies.

        The store is asked again whenever an account or token changed in this process
        (the server owns the file, so every revoke and disable passes here) and at least
        every ``RECHECK_SECONDS``; in between the answer is remembered (a page load asks
        for many resources).
        """
        now, generation = time.monotonic(), accounts.generation
        if session.checked is not None:
            seen, at = session.checked
            if seen == generation and now - at < RECHECK_SECONDS:
                return True
        if session.token_id is not None:
            if not account_tables.token_active(workspace.store, session.token_id):
                return False
        elif session.account_id is not None:
            account = accounts.session_account(session.account_id)
            if account is None:
                return False
            session.scope = account.role
        session.checked = (generation, now)
        return True

    sessions.check = still_valid

    def sign_in_page(request: Request, next_path: str, status: int = 200,
                     error: str | None = None, email: str = "",
                     retry_after: int | None = None, form: str = "") -> Response:  # fmt: skip
        token = secrets.token_urlsafe(32)
        response = render(request, "sign_in.html", None, status=status, title="Sign in",
                          csrf=token, next_path=next_path, error=error, email=email,
                          form=form)  # fmt: skip
        set_cookie(response, request, SIGN_IN_COOKIE, token)
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @router.get("/sign-in")
    def sign_in_form(request: Request, next: str | None = None) -> Response:
        request.state.started = time.perf_counter()
        if sessions.of(request) is not None:
            return RedirectResponse(safe_next(next), 303)
        return sign_in_page(request, safe_next(next))

    def principal(secret: str) -> tuple[str, str, str | None] | str:
        """(name, scope, token id) for a token, or why it is refused."""
        if secret.startswith(WRITE_KEY_PREFIX):
            return ("That is a write key (sl_wk_...): write keys can only send events. Sign in "
                    "with an API token of read or admin scope, e.g. from "
                    "`seamline tokens add me --scope read`.")  # fmt: skip
        if local_secret and secrets.compare_digest(secret, local_secret):
            return ("local-cli", "admin", None)
        token = workspace.store.token_for(secret)
        if token is None:
            return ("Unknown or revoked API token. Create one with "
                    "`seamline tokens add me --scope read`.")  # fmt: skip
        return (token.name, token.scope, token.token_id)

    def token_sign_in(secret: str, ip: str) -> tuple[str, str, str | None] | str:
        found = principal(secret)
        if isinstance(found, str):
            accounts.addresses.fail(ip)
            accounts.record("?", "sign_in.failed", "token", ip, {"reason": "unknown token"})
        else:
            accounts.record(found[0], "sign_in.ok", found[0], ip, {"factor": "api token"})
        return found

    def start_session(request: Request, next_path: str, name: str, scope: str,
                      token_id: str | None = None,
                      account_id: str | None = None) -> Response:  # fmt: skip
        sessions.end(request.cookies.get(COOKIE))  # a new id on every sign-in (no fixation)
        session = sessions.create(name, scope, token_id, account_id)
        response = RedirectResponse(next_path, 303)
        set_cookie(response, request, COOKIE, session.session_id)
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return response

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        request.state.started = time.perf_counter()
        form = await read_form(request)
        next_path = safe_next(form.get("next"))
        cookie, sent = request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")
        if not cookie or not sent or not secrets.compare_digest(cookie, sent):
            return sign_in_page(request, next_path, 403, "The sign-in form expired; try again.")
        ip = client_address(request)
        email = form.get("email", "").strip()
        kind = "account" if "email" in form else "token"
        wait = accounts.address_retry_after(ip)
        if wait:
            await run_in_threadpool(accounts.note_throttled, ip, email or None)
            return sign_in_page(request, next_path, 429, "Too many failed sign-ins from this "
                                f"address; try again in {max(1, round(wait / 60))} minute(s).",
                                email, wait, kind)  # fmt: skip
        if kind == "account":
            if not email or not form.get("password") or not form.get("code", "").strip():
                return sign_in_page(request, next_path, 400, "Fill in the email, the password "
                                    "and the code from your authenticator app (or a recovery "
                                    "code).", email, form=kind)  # fmt: skip
            result = await run_in_threadpool(accounts.sign_in, email, form.get("password", ""),
                                             form.get("code", ""), ip)  # fmt: skip
            if result.account is None:
                return sign_in_page(request, next_path, result.status, result.message, email,
                                    result.retry_after, kind)  # fmt: skip
            account = result.account
            return start_session(request, next_path, account.name or account.email,
                                 account.role, account_id=account.account_id)  # fmt: skip
        secret = form.get("token", "").strip()
        if not secret:
            return sign_in_page(request, next_path, 400, "Paste an API token to sign in.",
                                form=kind)  # fmt: skip
        found = await run_in_threadpool(token_sign_in, secret, ip)
        if isinstance(found, str):
            status = 403 if secret.startswith(WRITE_KEY_PREFIX) else 401
            return sign_in_page(request, next_path, status, found, form=kind)
        return start_session(request, next_path, *found)

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        session = sessions.of(request)
        if session is None:
            raise SignInRequired("/")
        check_csrf(session, await read_form(request))
        sessions.end(session.session_id)
        response = RedirectResponse("/sign-in", 303)
        clear_cookie(response, request, COOKIE)
        return response


def context_of(session: Session | None) -> dict[str, Any]:
    return {"session": session, "csrf": session.csrf if session else None}
