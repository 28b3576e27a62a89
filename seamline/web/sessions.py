"""Dashboard sessions: a random cookie id mapped to who signed in, in server memory.

A session belongs to an API token (its name and scope) or to an account (its email and
role). The token itself is never kept: signing in checks it once, then the browser holds
only an opaque session id (``HttpOnly``, ``SameSite=Strict``, ``Secure`` on https).
Each session has its own CSRF token, sent back in a hidden field by every POST form.
Sessions end on sign-out, after ``idle`` seconds without a request, after ``lifetime``
in all, when the server restarts (they live in this process only), and when the
``check`` callback refuses them: the dashboard checks on every request that the token
is not revoked and the account not disabled (and picks up a changed role).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "seamline_session"
#: Double-submit cookie guarding the sign-in form, before any session exists.
SIGN_IN_COOKIE = "seamline_sign_in"
IDLE = 8 * 3600.0
LIFETIME = 24 * 3600.0
MAX_SESSIONS = 10_000  # the oldest is dropped beyond this: memory stays bounded


@dataclass
class Session:
    session_id: str
    name: str  # the API token's name, or the account's name or email
    scope: str  # a token's "read" or "admin", or an account's "viewer", "analyst", "admin"
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    token_id: str | None = None  # the API token signed in with (None: account, local CLI)
    account_id: str | None = None  # the account signed in as
    #: A result to show once on the next page (a new token's secret, an invite link)
    flash: dict[str, Any] | None = None
    #: (generation, monotonic time) of the last check against the store
    checked: tuple[int, float] | None = None

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def role(self) -> str:
        """The account role this session acts as: a read token is an analyst."""
        return "analyst" if self.scope == "read" else self.scope

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and secrets.compare_digest(str(sent), self.csrf)


class SessionStore:
    """Thread-safe map of session ids to sessions (pages run in a thread pool)."""

    def __init__(self, idle: float = IDLE, lifetime: float = LIFETIME,
                 max_sessions: int = MAX_SESSIONS):  # fmt: skip
        self.idle = idle
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        #: Called (outside the lock) on every use: False ends the session at once.
        self.check: Callable[[Session], bool] | None = None
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, name: str, scope: str, token_id: str | None = None,
               account_id: str | None = None) -> Session:  # fmt: skip
        session = Session(secrets.token_urlsafe(32), name, scope, token_id=token_id,
                          account_id=account_id)  # fmt: skip
        with self._lock:
            self._sessions[session.session_id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.lifetime:
                del self._sessions[session_id]
                return None
        if self.check is not None and not self.check(session):
            self.end(session_id)
            return None
        with self._lock:
            if session_id not in self._sessions:  # ended meanwhile (sign-out elsewhere)
                return None
            session.seen = now
            self._sessions.move_to_end(session_id)
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def of(self, request: Request) -> Session | None:
        return self.get(request.cookies.get(COOKIE))


def is_https(request: Request) -> bool:
    # uvicorn sets the scheme from X-Forwarded-Proto for trusted proxies (127.0.0.1 by default)
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="strict",
                        secure=is_https(request))  # fmt: skip


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict",
                           secure=is_https(request))  # fmt: skip
