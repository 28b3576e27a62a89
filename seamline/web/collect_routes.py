"""Segment-compatible collection routes (``shared/specs/segment-ingest.md`` §1).

Every route answers with and without a trailing slash and never redirects. The
body is parsed as JSON whatever the Content-Type says; gzip is undone as a
stream. CORS is answered here, for ingest routes only.

The POST routes are plain ASGI apps (:class:`IngestEndpoint`), not FastAPI handlers:
they are the hottest path of the server, and ``seamline serve`` puts
:class:`CollectFastPath` in front of the application so that a POST to one of them skips
the middleware stack and the router as well. The routes stay registered with the
application, so an in-process client reaches the same endpoint the long way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from seamline.app import Workspace
from seamline.collect import RequestInfo, read_limited
from seamline.errors import BadRequest, SeamlineError
from seamline.web.errors import (
    out_of_range_response,
    seamline_error_response,
    unexpected_error_response,
)

SUCCESS = b'{"success":true}'
MAX_RETRY_COUNT = 2**31 - 1
SINGLE_ROUTES = {
    "track": "track", "identify": "identify", "page": "page", "screen": "screen",
    "group": "group", "alias": "alias",
    "t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias",
}  # fmt: skip
BATCH_ROUTES = ("/v1/batch", "/v1/b", "/v1/import", "/b", "/batch", "/v1/batch/b", "/batch/b")
# Paths that set context.ip from the client address (browser and mobile traffic).
CLIENT_ROUTES = {"/v1/b", "/b", *(f"/v1/{short}" for short in "tipsga")}
SETTINGS_ROUTES = (
    "/v1/projects/{write_key}/settings",
    "/projects/{write_key}/settings",
    "/v1/projects/{write_key}",
    "/projects/{write_key}",
)


def _cors_headers(headers: Mapping[str, str], origins: str) -> dict[str, str]:
    """CORS answer headers; ``headers`` are the request's, by lower-case name."""
    origin = headers.get("origin")
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if origin and ("*" in allowed or origin in allowed):
        allow = origin
    else:
        allow = "*" if "*" in allowed else ""
    answer = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": headers.get(
            "access-control-request-headers", "Content-Type, Authorization, X-Retry-Count"
        ),
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }
    if allow:
        answer["Access-Control-Allow-Origin"] = allow
    return answer


def _client_ip(peer: str | None, headers: Mapping[str, str], trusted: set[str]) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if forwarded and peer in trusted:
        return forwarded.split(",")[0].strip()
    return peer


def _retry_count(headers: Mapping[str, str]) -> int:
    try:
        count = int(headers.get("x-retry-count", "0"))
    except ValueError:
        return 0
    return min(max(0, count), MAX_RETRY_COUNT)  # stored as INTEGER: a huge value must not 503


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as ASGI delivers it; a client that leaves raises ClientDisconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class IngestEndpoint:
    """One POST collection route as a plain ASGI app: read, accept, answer after COMMIT.

    Errors get the same envelopes the application's handlers give
    (:mod:`seamline.web.errors`).
    """

    def __init__(self, workspace: Workspace, trusted: set[str], *, batch: bool,
                 forced_type: str | None):  # fmt: skip
        self._workspace = workspace
        self._trusted = trusted
        self._batch = batch
        self._forced_type = forced_type

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # the first of a repeated header, as Starlette
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        path = scope["path"]
        try:
            answer = await self._ingest(scope, headers, receive)
        except SeamlineError as exc:
            response: Response = seamline_error_response(exc, path, headers.get("origin"))
        except ClientDisconnect:
            return  # nobody is left to answer; nothing was queued
        except (RecursionError, OverflowError) as exc:
            response = out_of_range_response("POST", path, exc)
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered 500
            response = unexpected_error_response("POST", path)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": answer})
            await send({"type": "http.response.body", "body": SUCCESS})
            return
        await response(scope, receive, send)

    async def _ingest(self, scope: Scope, headers: dict[str, str],
                      receive: Receive) -> list[tuple[bytes, bytes]]:  # fmt: skip
        """Accept the request; returns the 200 answer's headers once it is committed."""
        workspace = self._workspace
        settings = workspace.settings
        cors = _cors_headers(headers, settings.cors_origins)
        encoding = headers.get("content-encoding", "").lower()
        declared = headers.get("content-length")
        if (declared and declared.isdigit() and "gzip" not in encoding
                and int(declared) > settings.max_request_bytes):  # fmt: skip
            raise BadRequest(
                f"Request body is larger than {settings.max_request_bytes} bytes; "
                "send smaller batches.",
                code="request_too_large",
            )
        body = await read_limited(
            _body_chunks(receive), gzip="gzip" in encoding, limit=settings.max_request_bytes
        )
        path = scope["path"].rstrip("/")
        header_key = headers.get("x-write-key")
        if not header_key and scope.get("query_string"):
            query = parse_qs(scope["query_string"].decode("latin-1"))
            header_key = (query.get("writeKey") or query.get("writekey") or [None])[-1]
        client = scope.get("client")
        info = RequestInfo(
            authorization=headers.get("authorization"),
            header_write_key=header_key,
            client_ip=_client_ip(client[0] if client else None, headers, self._trusted),
            fill_ip=path in CLIENT_ROUTES,
            retry_count=_retry_count(headers),
        )
        future = workspace.collector.accept(
            body, batch=self._batch, forced_type=self._forced_type, info=info
        )
        await asyncio.wrap_future(future)
        return [*_SUCCESS_HEADERS, *((name.lower().encode("latin-1"), value.encode("latin-1"))
                                     for name, value in cors.items())]  # fmt: skip


_SUCCESS_HEADERS = [(b"content-type", b"application/json"),
                    (b"content-length", str(len(SUCCESS)).encode())]  # fmt: skip


class CollectFastPath:
    """The outermost ASGI layer of ``seamline serve``.

    A POST to a collection route goes straight to its :class:`IngestEndpoint`, the one the
    router would reach after the middleware stack; anything else goes to ``app``.
    """

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, IngestEndpoint]):
        self.app = app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_collect_routes(app: FastAPI, workspace: Workspace) -> dict[str, IngestEndpoint]:
    """Add the collection routes to ``app``; returns the POST endpoints by path (both
    slash variants), for :class:`CollectFastPath`."""
    settings = workspace.settings
    trusted = {p.strip() for p in settings.trusted_proxies.split(",") if p.strip()}
    endpoints: dict[str, IngestEndpoint] = {}

    async def preflight(request: Request) -> Response:
        return Response(status_code=204,
                        headers=_cors_headers(request.headers, settings.cors_origins))  # fmt: skip

    async def metrics(request: Request) -> Response:
        # SDK telemetry: accepted and discarded (never an error, never a redirect).
        return Response(SUCCESS, media_type="application/json",
                        headers=_cors_headers(request.headers, settings.cors_origins))  # fmt: skip

    async def source_settings(request: Request) -> Response:
        write_key = request.path_params["write_key"]
        host = settings.public_host or request.headers.get("host", "localhost")
        protocol = settings.public_protocol or request.url.scheme
        body = {
            "integrations": {
                "Segment.io": {
                    "apiKey": write_key,
                    "apiHost": f"{host}/v1",
                    "protocol": protocol,
                    "deliveryStrategy": {"strategy": "standard"},
                }
            },
            "plan": {"track": {"__default": {"enabled": True, "integrations": {}}},
                     "identify": {"__default": {"enabled": True}},
                     "group": {"__default": {"enabled": True}}},
            "edgeFunction": {},
            "analyticsNextEnabled": True,
            "middlewareSettings": {},
            "enabledMiddleware": {},
            "metrics": {"sampleRate": 0},
            "legacyVideoPluginsEnabled": False,
            "remotePlugins": [],
        }  # fmt: skip
        headers = _cors_headers(request.headers, settings.cors_origins)
        headers["Cache-Control"] = "public, max-age=300"
        return JSONResponse(body, headers=headers)

    def route(path: str, endpoint: Callable[[Request], Awaitable[Response]] | IngestEndpoint,
              methods: list[str], name: str) -> None:  # fmt: skip
        for variant in (path, path + "/"):
            if isinstance(endpoint, IngestEndpoint):  # a plain ASGI app, not a FastAPI handler
                app.router.routes.append(Route(variant, endpoint, methods=methods,
                                               name=f"{name}:{variant}"))  # fmt: skip
                endpoints[variant] = endpoint
            else:
                app.add_api_route(variant, endpoint, methods=methods, include_in_schema=False,
                                  name=f"{name}:{variant}")  # fmt: skip
            app.add_api_route(variant, preflight, methods=["OPTIONS"], include_in_schema=False,
                              name=f"{name}-preflight:{variant}")  # fmt: skip

    for path in BATCH_ROUTES:
        route(path, IngestEndpoint(workspace, trusted, batch=True, forced_type=None), ["POST"],
              "batch")  # fmt: skip
    for short, kind in SINGLE_ROUTES.items():
        route(f"/v1/{short}", IngestEndpoint(workspace, trusted, batch=False, forced_type=kind),
              ["POST"], f"single-{short}")  # fmt: skip
    route("/v1/m", metrics, ["POST"], "metrics")
    for path in SETTINGS_ROUTES:
        route(path, source_settings, ["GET"], "settings")
    return endpoints
