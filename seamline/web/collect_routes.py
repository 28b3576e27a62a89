"""Segment-compatible collection routes (``shared/specs/segment-ingest.md`` §1).

Every route answers with and without a trailing slash and never redirects. The
body is parsed as JSON whatever the Content-Type says; gzip is undone as a
stream. CORS is answered here, for ingest routes only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from starlette.responses import JSONResponse, Response

from seamline.app import Workspace
from seamline.collect import RequestInfo, read_limited
from seamline.errors import BadRequest

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


def _cors_headers(request: Request, origins: str) -> dict[str, str]:
    origin = request.headers.get("origin")
    allowed = [o.strip() for o in origins.split(",") if o.strip()]
    if origin and ("*" in allowed or origin in allowed):
        allow = origin
    else:
        allow = "*" if "*" in allowed else ""
    headers = {
        "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get(
            "access-control-request-headers", "Content-Type, Authorization, X-Retry-Count"
        ),
        "Access-Control-Max-Age": "86400",
        "Vary": "Origin",
    }
    if allow:
        headers["Access-Control-Allow-Origin"] = allow
    return headers


def _client_ip(request: Request, trusted: set[str]) -> str | None:
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and peer in trusted:
        return forwarded.split(",")[0].strip()
    return peer


def _retry_count(request: Request) -> int:
    try:
        count = int(request.headers.get("x-retry-count", "0"))
    except ValueError:
        return 0
    return min(max(0, count), MAX_RETRY_COUNT)  # stored as INTEGER: a huge value must not 503


def install_collect_routes(app: FastAPI, workspace: Workspace) -> None:
    settings = workspace.settings
    trusted = {p.strip() for p in settings.trusted_proxies.split(",") if p.strip()}

    def handler(batch: bool, forced_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def ingest(request: Request) -> Response:
            cors = _cors_headers(request, settings.cors_origins)
            encoding = request.headers.get("content-encoding", "").lower()
            declared = request.headers.get("content-length")
            if (declared and declared.isdigit() and "gzip" not in encoding
                    and int(declared) > settings.max_request_bytes):  # fmt: skip
                raise BadRequest(
                    f"Request body is larger than {settings.max_request_bytes} bytes; "
                    "send smaller batches.",
                    code="request_too_large",
                )
            body = await read_limited(
                request.stream(), gzip="gzip" in encoding, limit=settings.max_request_bytes
            )
            path = request.url.path.rstrip("/")
            info = RequestInfo(
                authorization=request.headers.get("authorization"),
                header_write_key=request.headers.get("x-write-key")
                or request.query_params.get("writeKey")
                or request.query_params.get("writekey"),
                client_ip=_client_ip(request, trusted),
                fill_ip=path in CLIENT_ROUTES,
                retry_count=_retry_count(request),
            )
            future = workspace.collector.accept(
                body, batch=batch, forced_type=forced_type, info=info
            )
            await asyncio.wrap_future(future)
            return Response(SUCCESS, media_type="application/json", headers=cors)

        return ingest

    async def preflight(request: Request) -> Response:
        return Response(status_code=204, headers=_cors_headers(request, settings.cors_origins))

    async def metrics(request: Request) -> Response:
        # SDK telemetry: accepted and discarded (never an error, never a redirect).
        return Response(SUCCESS, media_type="application/json",
                        headers=_cors_headers(request, settings.cors_origins))  # fmt: skip

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
        headers = _cors_headers(request, settings.cors_origins)
        headers["Cache-Control"] = "public, max-age=300"
        return JSONResponse(body, headers=headers)

    def route(path: str, endpoint: Callable[[Request], Awaitable[Response]],
              methods: list[str], name: str) -> None:  # fmt: skip
        for variant in (path, path + "/"):
            app.add_api_route(variant, endpoint, methods=methods, include_in_schema=False,
                              name=f"{name}:{variant}")  # fmt: skip
            app.add_api_route(variant, preflight, methods=["OPTIONS"], include_in_schema=False,
                              name=f"{name}-preflight:{variant}")  # fmt: skip

    for path in BATCH_ROUTES:
        route(path, handler(True, None), ["POST"], "batch")
    for short, kind in SINGLE_ROUTES.items():
        route(f"/v1/{short}", handler(False, kind), ["POST"], f"single-{short}")
    route("/v1/m", metrics, ["POST"], "metrics")
    for path in SETTINGS_ROUTES:
        route(path, source_settings, ["GET"], "settings")
