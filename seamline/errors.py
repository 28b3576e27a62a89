"""One root error with an HTTP status and a machine-readable code.

Every layer raises these; the web layer turns them into the JSON error envelope
``{"code": ..., "message": ...}`` and the CLI into one clear line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class SeamlineError(Exception):
    """Base error. ``code`` is stable and machine-readable; ``message`` names the fix."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __reduce__(self) -> tuple[Any, ...]:
        # keep code, status and the rest across processes (a parse worker's BadRequest)
        return _rebuild, (type(self), self.message, dict(self.__dict__))


def _rebuild(cls: type[SeamlineError], message: str, state: dict[str, Any]) -> SeamlineError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class BadRequest(SeamlineError):
    status = 400
    code = "bad_request"


class NotFound(SeamlineError):
    status = 404
    code = "not_found"


class Conflict(SeamlineError):
    status = 409
    code = "conflict"


class Unauthorized(SeamlineError):
    status = 401
    code = "unauthorized"


class Forbidden(SeamlineError):
    status = 403
    code = "forbidden"


class Overloaded(SeamlineError):
    """The write queue is full or the store cannot commit: retry later, nothing was stored."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class StoreUnavailable(Overloaded):
    code = "store_unavailable"


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return `` Did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""
