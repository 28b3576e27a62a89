"""Dashboard sessions: a random cookie id mapped to (token name, scope) in server memory.

The API token itself is never kept: signing in checks it once, then the browser holds
only an opaque session id (``HttpOnly``, ``SameSite=Strict``, ``Secure`` on https).
Each session has its own CSRF token, sent back in a hidden field by every POST form.
Sessions end on sign-out, after ``IDLE`` without a request, after ``LIFETIME`` in all,
and when the server restarts (they live in this process only).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

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
    name: str  # the API token's name
    scope: str  # "read" or "admin"
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and secrets.compare_digest(str(sent), self.csrf)


class SessionStore:
    """Thread-safe map of session ids to sessions (pages run in a thread pool)."""

    def __init__(self, idle: float = IDLE, lifetime: float = LIFETIME,
                 max_sessions: int = MAX_SESSIONS):  # fmt: skip
        self.idle = idle
        self.lifetime = lifetime
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, name: str, scope: str) -> Session:
        session = Session(secrets.token_urlsafe(32), name, scope)
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
