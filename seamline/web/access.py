"""Who may see the dashboard: sign-in with an API token, sessions, CSRF on every POST form.

- Signing in takes an API token with read or admin scope (the same tokens as ``/api``);
  write keys (``sl_wk_...``) are refused with a message saying why.
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

from seamline.app import Workspace
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
Render = Callable[..., Response]


class SignInRequired(Exception):
    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


class FormRefused(Exception):
    """A POST whose CSRF token is missing or wrong (or a form that is not a form)."""


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

    app.add_exception_handler(SignInRequired, to_sign_in)
    app.add_exception_handler(FormRefused, refused)

    def sign_in_page(request: Request, next_path: str, status: int = 200,
                     error: str | None = None) -> Response:  # fmt: skip
        token = secrets.token_urlsafe(32)
        response = render(request, "sign_in.html", None, status=status, title="Sign in",
                          csrf=token, next_path=next_path, error=error)  # fmt: skip
        set_cookie(response, request, SIGN_IN_COOKIE, token)
        return response

    @router.get("/sign-in")
    def sign_in_form(request: Request, next: str | None = None) -> Response:
        request.state.started = time.perf_counter()
        if sessions.of(request) is not None:
            return RedirectResponse(safe_next(next), 303)
        return sign_in_page(request, safe_next(next))

    def principal(secret: str) -> tuple[str, str] | str:
        """(name, scope) for a token, or why it is refused."""
        if secret.startswith(WRITE_KEY_PREFIX):
            return ("That is a write key (sl_wk_...): write keys can only send events. Sign in "
                    "with an API token of read or admin scope, e.g. from "
                    "`seamline tokens add me --scope read`.")  # fmt: skip
        if local_secret and secrets.compare_digest(secret, local_secret):
            return ("local-cli", "admin")
        token = workspace.store.token_for(secret)
        if token is None:
            return ("Unknown or revoked API token. Create one with "
                    "`seamline tokens add me --scope read`.")  # fmt: skip
        return (token.name, token.scope)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        request.state.started = time.perf_counter()
        form = await read_form(request)
        next_path = safe_next(form.get("next"))
        cookie, sent = request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")
        if not cookie or not sent or not secrets.compare_digest(cookie, sent):
            return sign_in_page(request, next_path, 403, "The sign-in form expired; try again.")
        secret = form.get("token", "").strip()
        if not secret:
            return sign_in_page(request, next_path, 400, "Paste an API token to sign in.")
        found = await run_in_threadpool(principal, secret)
        if isinstance(found, str):
            status = 403 if secret.startswith(WRITE_KEY_PREFIX) else 401
            return sign_in_page(request, next_path, status, found)
        sessions.end(request.cookies.get(COOKIE))  # a new id on every sign-in (no fixation)
        session = sessions.create(*found)
        response = RedirectResponse(next_path, 303)
        set_cookie(response, request, COOKIE, session.session_id)
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return response

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
