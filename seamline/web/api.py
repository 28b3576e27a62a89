"""The JSON API under ``/api``: the same calls as the CLI and the Python API.

Reading needs a bearer token with ``read`` scope, managing sources and tokens an
``admin`` token. Write keys are refused on every route here.
"""


import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field

from seamline import __version__
from seamline.analytics.cache import run_cached
from seamline.app import Workspace
from seamline.errors import BadRequest, Forbidden, Unauthorized
from seamline.store.database import WRITE_KEY_PREFIX
from seamline.web.accounts_api import install_accounts_routes
from seamline.web.metrics_api import install_metrics_routes
from seamline.web.moments_api import install_moments_routes


class SourceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    channel: str = Field(description="mobile, web, server, call_center, email, store, ...")
    unit: str | None = Field(default=None, description="Business unit that owns the source.")


class SourceOut(BaseModel):
    name: str
    channel: str
    unit: str | None
    write_key: str


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scope: Literal["read", "admin"]


class TokenOut(BaseModel):
    name: str
    scope: str
    token: str


class ImportIn(BaseModel):
    source: str = Field(description="Name of the source the events belong to.")
    events: list[dict[str, Any]] = Field(max_length=10_000)


class ImportOut(BaseModel):
    stored: int
    duplicates: int
    failed: int
    reasons: dict[str, int]


class SourceStats(BaseModel):
    name: str
    channel: str
    unit: str | None
    events: int
    failed_events: int
    last_received_at: str | None
    rate_limited: int = 0  # requests refused with 429 (setting ingest_rate_limit)


class StatsOut(BaseModel):
    events: int
    persons: int
    failed_events: int
    dropped_unknown_key: int
    dropped_suppressed: int
    rate_limited: int = 0
    sources: list[SourceStats]
    writer: dict[str, Any] | None = Field(
        default=None,
        description="Where the ingest writer's time went since the server started, per phase "
        "(wall and CPU microseconds per event).",
    )


class LakeExportIn(BaseModel):
    directory: str = Field(min_length=1, description="Lake directory on the server's machine.")
    incremental: bool = False


class Principal(BaseModel):
    name: str
    scope: str


def _auth(workspace: Workspace, local_secret: str | None, needed: str
          ) -> Callable[[Request], Principal]:  # fmt: skip
    def check(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized(
                "This route needs 'Authorization: Bearer <token>'; "
                "create one with `seamline tokens add NAME --scope read`.",
            )
        if secret.startswith(WRITE_KEY_PREFIX):
            raise Forbidden(
                "Write keys can only send events; use an API token for this route.",
                code="write_key_not_allowed",
            )
        if local_secret and secrets.compare_digest(secret, local_secret):
            return Principal(name="local-cli", scope="admin")
        token = workspace.store.token_for(secret)
        if token is None:
            raise Unauthorized("Unknown or revoked API token.", code="invalid_token")
        if needed == "admin" and token.scope != "admin":
            raise Forbidden(
                f"Token '{token.name}' has read scope; this route needs an admin token.",
                code="insufficient_scope",
            )
        return Principal(name=token.name, scope=token.scope)

    return check


def install_api(app: FastAPI, workspace: Workspace, local_secret: str | None) -> None:
    router = APIRouter(prefix="/api")
    Reader = Annotated[Principal, Depends(_auth(workspace, local_secret, "read"))]
    Admin = Annotated[Principal, Depends(_auth(workspace, local_secret, "admin"))]

    @router.get("/health", tags=["server"])
    def health() -> dict[str, Any]:
        """Liveness and the write queue's depth; needs no token."""
        return {"ok": True, "version": __version__, "queued_events": workspace.writer.queued_events}

    @router.get("/stats", response_model=StatsOut, tags=["data"])
    def stats(principal: Reader) -> dict[str, Any]:
        """Counts of events, persons, failed events and dropped events, per source."""
        return workspace.stats()

    @router.get("/failed-events", tags=["data"])
    def failed_events(
        principal: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        """The latest events that failed validation, with the reason and the raw JSON."""
        return workspace.failed_events(limit)

    @router.get("/sources", tags=["sources"])
    def list_sources(principal: Reader) -> list[dict[str, Any]]:
        """Every source with its channel, unit and (public) write key."""
        return workspace.sources()

    @router.post("/sources", response_model=SourceOut, status_code=201, tags=["sources"])
    def add_source(body: SourceIn, principal: Admin) -> dict[str, Any]:
        """Create a source; the answer holds its write key."""
        return workspace.add_source(body.name, body.channel, body.unit)

    @router.get("/tokens", tags=["tokens"])
    def list_tokens(principal: Admin) -> list[dict[str, Any]]:
        """API tokens (names, scopes, hints); secrets are never shown again."""
        return workspace.tokens()

    @router.post("/tokens", response_model=TokenOut, status_code=201, tags=["tokens"])
    def add_token(body: TokenIn, principal: Admin) -> dict[str, Any]:
        """Create an API token; the secret is in this answer only."""
        return workspace.add_token(body.name, body.scope, actor=principal.name)

    @router.delete("/tokens/{name}", tags=["tokens"])
    def revoke_token(name: str, principal: Admin) -> dict[str, Any]:
        """Revoke the API tokens with this name; they are refused from the next request."""
        return workspace.revoke_token(name, actor=principal.name)

    @router.post("/import", response_model=ImportOut, tags=["data"])
    def import_events(body: ImportIn, principal: Admin) -> dict[str, Any]:
        """Import events for a source, keeping their timestamps (used by `seamline import`)."""
        return workspace.import_events(body.source, body.events)

    @router.get("/persons/{identifier}", tags=["identity"])
    def person(
        identifier: str, principal: Reader, limit: Annotated[int, Query(ge=1, le=10000)] = 500
    ) -> dict[str, Any]:
        """A person (found by any identifier): identities, how each linked, refusals, timeline."""
        return workspace.person(identifier, limit)

    @router.get("/identity/explain", tags=["identity"])
    def explain(a: str, b: str, principal: Reader) -> dict[str, Any]:
        """Why two identifiers are, or are not, the same person."""
        return workspace.explain(a, b)

    @router.post("/identity/rebuild", tags=["identity"])
    def rebuild(principal: Admin) -> dict[str, Any]:
        """Recompute persons as connected components and report differences."""
        return workspace.rebuild_identity()

    @router.delete("/persons/{identifier}", tags=["identity"])
    def forget(identifier: str, principal: Admin) -> dict[str, Any]:
        """GDPR: delete the person's events and identities; suppress their identifiers."""
        return workspace.forget(identifier)

    @router.get("/funnel", tags=["analytics"])
    def funnel(
        principal: Reader,
        steps: Annotated[list[str], Query(min_length=2, description="Step events, in order.")],
        within: str = "7d",
        by: str | None = None,
        by_step: Annotated[int | None, Query(ge=1)] = None,
        strict: bool = False,
        exclude: Annotated[list[str] | None, Query()] = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Ordered funnel: people per step, conversion with Wilson intervals, time to convert."""
        return run_cached(
            workspace, "funnel", steps=steps, within=within, by=by, by_step=by_step,
            strict=strict, exclude=exclude, start=_naive(start), end=_naive(end),
        ).to_dict()  # fmt: skip

    @router.get("/journeys", tags=["analytics"])
    def journeys(
        principal: Reader,
        from_event: str | None = None,
        min_people: Annotated[int, Query(ge=1)] = 1,
        top: Annotated[int | None, Query(ge=1)] = None,
        lane: Literal["channel", "unit"] = "channel",
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Journey map: edges between touchpoints with people, transitions, hand-off times."""
        return run_cached(
            workspace, "journeys", from_event=from_event, min_people=min_people, top=top,
            lane=lane, start=_naive(start), end=_naive(end),
        ).to_dict()  # fmt: skip

    @router.get("/seams", tags=["analytics"])
    def seams(
        principal: Reader,
        within: str = "2h",
        min_people: Annotated[int, Query(ge=1)] = 30,
        funnel: Annotated[list[str] | None, Query(description="Funnel steps for segments")] = None,
        by: Annotated[list[str] | None, Query()] = None,
        outcome_within: str = "7d",
        include_all: bool = False,
    ) -> dict[str, Any]:
        """Ranked failing hand-offs (costly contacts, loops, outcome routes, broken segments)."""
        return run_cached(workspace, "seams", within=within, min_people=min_people,
                          funnel=funnel, by=by, outcome_within=outcome_within,
                          include_all=include_all).to_dict()  # fmt: skip

    @router.get("/paths", tags=["analytics"])
    def paths(
        principal: Reader,
        event: Annotated[str, Query(min_length=1, description="Anchor: each person's first.")],
        steps: Annotated[int, Query(ge=1, le=20)] = 3,
        direction: Literal["after", "before"] = "after",
        top: Annotated[int, Query(ge=1)] = 10,
        collapse_repeats: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Top paths of touchpoints after (or before) each person's first ``event``."""
        return run_cached(workspace, "paths", event=event, steps=steps, direction=direction,
                          top=top, collapse_repeats=collapse_repeats, start=_naive(start),
                          end=_naive(end)).to_dict()  # fmt: skip

    @router.get("/retention", tags=["analytics"])
    def retention(
        principal: Reader,
        start_event: str | None = None,
        return_event: str | None = None,
        period: Literal["day", "week"] = "week",
        periods: Annotated[int, Query(ge=1, le=366)] = 8,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Cohorts by first start event; people who return in each later period."""
        return run_cached(workspace, "retention", start_event=start_event,
                          return_event=return_event, period=period, periods=periods,
                          start=_naive(start), end=_naive(end)).to_dict()  # fmt: skip

    @router.get("/outcomes", tags=["analytics"])
    def outcomes(
        principal: Reader,
        period: Literal["day", "week"] = "week",
        outcome: Annotated[list[str] | None, Query(description="Default: declared.")] = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Per period: outcome rate, time to outcome, costly contacts, containment."""
        return run_cached(workspace, "outcomes", period=period, outcome=outcome,
                          start=_naive(start), end=_naive(end)).to_dict()  # fmt: skip

    @router.post("/lake/export", tags=["lake"])
    def lake_export(body: LakeExportIn, principal: Admin) -> dict[str, Any]:
        """Publish the workspace to a Parquet lake directory on the server's machine."""
        if not body.directory.startswith("/"):  # relative to the server's cwd: never meant
            raise BadRequest("The lake directory must be an absolute path on the server.",
                             code="invalid_directory")  # fmt: skip
        try:
            return workspace.lake_export(body.directory, body.incremental)
        except (OSError, ValueError) as exc:  # a directory the server cannot write
            raise BadRequest(f"Cannot write the lake to {body.directory!r}: {exc}",
                             code="invalid_directory") from None  # fmt: skip

    install_moments_routes(router, workspace, Admin)
    install_accounts_routes(router, workspace, Admin)
    install_metrics_routes(router, workspace, Reader)
    app.include_router(router)


def _naive(value: datetime | None) -> datetime | None:
    """API times may carry an offset; the store keeps naive UTC."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00
        raise BadRequest(f"The time {value.isoformat()} is out of range.",
                         code="invalid_time") from None  # fmt: skip
