"""One JSON error envelope, ``{"code": ..., "message": ...}``, for every error."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from seamline.errors import Overloaded, SeamlineError

log = logging.getLogger("seamline.web")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:  # fmt: skip
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def seamline_error_response(exc: SeamlineError, path: str, origin: str | None) -> JSONResponse:
    """The envelope of a :class:`SeamlineError`, with ``Retry-After`` when it is one."""
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    if not path.startswith("/api") and origin:
        # Browsers may read the error (and Retry-After) of a collection route.
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
        headers["Vary"] = "Origin"
    return error_response(exc.status, exc.code, exc.message, headers)


def out_of_range_response(method: str, path: str, exc: Exception) -> JSONResponse:
    """A 400 for input only a parser's or the standard library's limits refuse."""
    # Only extreme input gets here (nesting too deep for a parser, a number or date too
    # large for the standard library): a 400, never a 500. Logged so the route can learn
    # to refuse it earlier, with a better message.
    log.warning("refused %s %s as invalid input: %s: %s", method, path,
                type(exc).__name__, str(exc)[:200])  # fmt: skip
    return error_response(400, "invalid_value", "A value in the request is out of range "
                          f"or nested too deeply ({type(exc).__name__}).")  # fmt: skip


def unexpected_error_response(method: str, path: str) -> JSONResponse:
    """A 500 for a bug; call it from the ``except`` block, which logs the traceback."""
    log.exception("unexpected error on %s %s", method, path)
    return error_response(
        500, "internal_error", "Unexpected server error; it was logged. Please report it."
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SeamlineError)
    async def seamline_error(request: Request, exc: SeamlineError) -> Response:
        return seamline_error_response(exc, request.url.path, request.headers.get("origin"))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return error_response(400, "invalid_request", "; ".join(problems) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path}."
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)

    @app.exception_handler(RecursionError)
    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: Exception) -> Response:
        return out_of_range_response(request.method, request.url.path, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # Starlette calls this inside its ``except`` block: the log line gets the traceback
        return unexpected_error_response(request.method, request.url.path)
