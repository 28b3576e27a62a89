"""The web dashboard at ``/``: server-rendered pages over the same workspace calls as the API.

Pages: overview, journeys (Sankey), funnel builder, seams, person lookup, live events
(server-sent events fed by a writer listener) and sources. Sign-in, sessions and CSRF are
in :mod:`seamline.web.access`; figures in :mod:`seamline.web.charts`. Plotly's JS comes
from the installed ``plotly`` package and is served here, so the dashboard works offline.
"""

# No "from __future__ import annotations": FastAPI must resolve the local Viewer alias.
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from seamline import __version__
from seamline.analytics.cache import Cached
from seamline.app import CHANNELS, Workspace
from seamline.errors import NotFound, SeamlineError
from seamline.web import charts, explore
from seamline.web.access import (
    check_csrf,
    context_of,
    install_access,
    read_form,
    viewer_dependency,
)
from seamline.web.accounts import install_accounts
from seamline.web.formatting import FILTERS
from seamline.web.live import Broadcaster
from seamline.web.metrics_page import PAGE_OBSERVE, PAGE_PREDICT, metrics_page
from seamline.web.precompute import Precompute
from seamline.web.sessions import Session, SessionStore

log = logging.getLogger("seamline.web")

NAV = (("/", "Overview"), ("/journeys", "Journeys"), ("/funnel", "Funnels"),
       ("/seams", "Seams"), ("/paths", "Paths"), ("/retention", "Retention"),
       ("/metrics", "Metrics"), ("/person", "People"), ("/live", "Live"),
       ("/sources", "Sources"))  # fmt: skip
BREAKDOWNS = ("channel", "unit", "source", "app_version", "os_name", "os_version",
              "device_type", "library_name", "properties.")  # fmt: skip
MAX_STEPS = 8
# what the overview and the default views of journeys (either lane), seams and retention show
PRECOMPUTE: list[tuple[str, dict[str, Any]]] = [
    ("stats", {}), ("event_names", {}), ("seams", {}), ("outcomes", {}),
    ("journeys", {"min_people": 1, "top": None, "lane": "channel"}), ("retention", {}),
    ("journeys", {"min_people": 1, "top": None, "lane": "unit"}),
    ("metrics_score", {"observe": PAGE_OBSERVE, "predict": PAGE_PREDICT}),
]  # fmt: skip
# No inline script may run: charts read their figure from a JSON <script> block instead.
# plotly.js injects its own <style> elements, hence 'unsafe-inline' for styles only.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def plotly_js() -> Path:
    return Path(str(files("plotly") / "package_data" / "plotly.min.js"))


def _int(value: str | None, default: int, low: int, high: int) -> int:
    """Form numbers: anything unreadable falls back to the default; the rest is clamped."""
    try:
        return max(low, min(high, int(str(value))))
    except ValueError:
        return default


def _safely(what: str, call: Callable[[], Any]) -> tuple[Any, str | None]:
    """Run one panel's query; a failure shows in that panel instead of failing the page."""
    try:
        return call(), None
    except SeamlineError as exc:
        return None, exc.message
    except Exception:  # one broken panel must not take the page down
        log.exception("dashboard panel %s failed", what)
        return None, f"The {what} could not be computed; the server log has the details."


def _oldest(*results: Cached[Any] | None) -> str | None:
    """The "as of" time of a page: the oldest of its results (all reflect the same data version)."""
    times = [result for result in results if result is not None]
    return min(times, key=lambda result: result.computed_at).as_of if times else None


class Dashboard:
    def __init__(self, workspace: Workspace, local_secret: str | None):
        self.workspace = workspace
        self.local_secret = local_secret
        self.sessions = SessionStore()
        self.live = Broadcaster(lambda: {s.source_id: s.name for s in workspace.store.sources()})
        self.templates = Environment(loader=PackageLoader("seamline.web", "templates"),
                                     autoescape=select_autoescape(default=True),
                                     trim_blocks=True, lstrip_blocks=True)  # fmt: skip
        self.templates.filters.update(FILTERS)
        self.templates.globals.update(nav=NAV, version=__version__, colour=charts.colour)

    def render(self, request: Request, template: str, session: Session | None,
               status: int = 200, **context: Any) -> Response:  # fmt: skip
        html = self.templates.get_template(template).render(
            request=request, path=request.url.path, **{**context_of(session), **context}
        )
        response = HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        started = getattr(request.state, "started", None)
        if started is not None:  # lets bench/dashboard.py read the server's own time
            response.headers["Server-Timing"] = (
                f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            )
        return response

    # -- pages ------------------------------------------------------------------------
    def overview(self, request: Request, session: Session) -> Response:
        ws = self.workspace
        has_outcomes = hasattr(ws, "outcomes")  # added by the outcomes issue; guard older ones
        # the panels are independent queries and DuckDB releases the GIL: run them together
        # usually all three come from the cache (precomputed after commits); when not, they
        # are independent queries and DuckDB releases the GIL: run them together
        with ThreadPoolExecutor(3, thread_name_prefix="seamline-overview") as pool:
            stats = pool.submit(ws.cached, "stats")
            seams = pool.submit(_safely, "seams", lambda: ws.cached("seams"))
            outcomes = None
            if has_outcomes:
                outcomes = pool.submit(_safely, "outcomes", lambda: ws.cached("outcomes"))
            outcome_cached, outcome_error = outcomes.result() if outcomes else (None, None)
            seams_cached, seams_error = seams.result()
            counts = stats.result()
        outcome = outcome_cached.value.to_dict() if outcome_cached else None
        top_seams = seams_cached.value.to_dict()["seams"][:5] if seams_cached else None
        periods = (outcome or {}).get("periods") or []
        return self.render(
            request, "overview.html", session, title="Overview", stats=counts.value,
            as_of=_oldest(counts, seams_cached, outcome_cached),
            has_outcomes=has_outcomes, outcomes=outcome, periods=periods,
            outcome_error=outcome_error, seams=top_seams or [], seams_error=seams_error,
            outcome_chart=charts.outcome_lines(periods) if periods else None,
        )  # fmt: skip

    def journeys(self, request: Request, session: Session) -> Response:
        query = request.query_params
        min_people = _int(query.get("min_people"), 1, 1, 10**9)
        top = _int(query.get("top"), 40, 1, 500)
        lane = "unit" if query.get("lane") == "unit" else "channel"
        # every edge is cached (top=None) and cut here: each "top" shares one computation
        cached, error = _safely("journey map", lambda: self.workspace.cached(
            "journeys", min_people=min_people, top=None, lane=lane))  # fmt: skip
        result = cached.value.to_dict() if cached else None
        edges = ((result or {}).get("edges") or [])[:top]
        forward, loops = charts.split_loops(edges, lane, (result or {}).get("starts"))
        hues = charts.lane_colours(edges, lane)
        return self.render(
            request, "journeys.html", session, title="Journeys", error=error, edges=edges,
            as_of=_oldest(cached),
            loops=loops, min_people=min_people, top=top, lane=lane, hues=hues,
            chart=charts.journey_sankey(forward, lane, hues) if forward else None,
        )  # fmt: skip

    def funnel(self, request: Request, session: Session) -> Response:
        query = request.query_params
        steps = [step for step in query.getlist("steps") if step.strip()][:MAX_STEPS]
        within = (query.get("within") or "7d").strip()
        by = (query.get("by") or "").strip() or None
        names = self.workspace.cached("event_names").value
        result, error, cached = None, None, None
        if len(steps) >= 2:
            cached, error = _safely("funnel", lambda: self.workspace.cached(
                "funnel", steps=steps, within=within, by=by))  # fmt: skip
            result = cached.value.to_dict() if cached else None
        elif query.getlist("steps"):
            error = "Choose at least two steps."
        breakdown = (result or {}).get("breakdown") or {}
        return self.render(
            request, "funnel.html", session, title="Funnels", names=names, steps=steps,
            selects=max(3, min(MAX_STEPS, len(steps) + 1)), within=within, by=by or "",
            breakdowns=BREAKDOWNS, result=result, breakdown=breakdown, error=error,
            as_of=_oldest(cached),
            chart=charts.funnel_bars(result) if result else None,
        )  # fmt: skip

    def seams(self, request: Request, session: Session) -> Response:
        query = request.query_params
        within = (query.get("within") or "2h").strip()
        min_people = _int(query.get("min_people"), 30, 1, 10**9)
        include_all = query.get("all") == "1"
        cached, error = _safely("seams", lambda: self.workspace.cached(
            "seams", within=within, min_people=min_people, include_all=include_all))  # fmt: skip
        result = cached.value.to_dict() if cached else None
        return self.render(
            request, "seams.html", session, title="Seams", result=result or {}, error=error,
            seams=(result or {}).get("seams") or [], within=within, min_people=min_people,
            include_all=include_all, as_of=_oldest(cached),
        )  # fmt: skip

    def person(self, request: Request, session: Session) -> Response:
        identifier = (request.query_params.get("id") or "").strip()
        profile, error = None, None
        if identifier:
            try:
                profile = self.workspace.person(identifier)
            except NotFound as exc:
                try:  # a person id, as the seams page links them
                    profile = self.workspace.person_by_id(identifier)
                except NotFound:
                    error = exc.message
        days: dict[str, list[dict[str, Any]]] = {}
        for event in (profile or {}).get("events", []):
            days.setdefault(event["timestamp"][:10], []).append(event)
        return self.render(
            request, "person.html", session, title="People", identifier=identifier,
            profile=profile, error=error, days=days,
            chart=charts.person_timeline(profile["events"]) if profile and profile["events"]
            else None,
        )  # fmt: skip

    def sources(self, request: Request, session: Session, status: int = 200,
                **extra: Any) -> Response:  # fmt: skip
        ws = self.workspace
        keys = {source["name"]: source for source in ws.sources()}
        rows = [{**row, **keys.get(row["name"], {})} for row in ws.cached("stats").value["sources"]]
        return self.render(
            request, "sources.html", session, status=status, title="Sources", sources=rows,
            tokens=ws.tokens() if session.is_admin else None, channels=CHANNELS,
            failed=ws.failed_events(20), **extra,
        )  # fmt: skip


def install_dashboard(app: FastAPI, workspace: Workspace, local_secret: str | None) -> Dashboard:
    """Add the dashboard's routes; its live-event broadcaster listens to the writer."""
    board = Dashboard(workspace, local_secret)
    workspace.writer.add_listener(board.live.publish)
    # the default views' analyses, recomputed after commits, so first visits hit the cache
    # (and the Paths page's default view: after the most common event)
    precompute = Precompute(workspace, [*PRECOMPUTE, ("paths", lambda: explore.default_paths(
        workspace))], workspace.settings.precompute_seconds)  # fmt: skip
    workspace.writer.add_listener(precompute.poke)
    workspace.on_close(precompute.stop)
    app.state.precompute = precompute.start()
    app.state.live = board.live
    router = APIRouter(include_in_schema=False)
    install_access(app, router, workspace, board.sessions, local_secret, board.render)
    install_accounts(router, workspace, board.sessions, board.render)  # invites, admin pages
    Viewer = Annotated[Session, Depends(viewer_dependency(board.sessions))]

    @router.get("/static/plotly.min.js")
    def plotly() -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip

    pages: dict[str, Callable[[Request, Session], Response]] = {
        "/": board.overview, "/journeys": board.journeys, "/funnel": board.funnel,
        "/seams": board.seams, "/person": board.person, "/sources": board.sources,
        "/paths": lambda request, session: explore.paths_page(board, request, session),
        "/retention": lambda request, session: explore.retention_page(board, request, session),
        "/metrics": lambda request, session: metrics_page(board, request, session),
    }  # fmt: skip
    Page = Callable[[Request, Session], Response]

    def endpoint_for(page: Page) -> Callable[[Request, Session], Response]:
        def endpoint(request: Request, session: Viewer) -> Response:
            return page(request, session)

        return endpoint

    for path, page in pages.items():
        router.add_api_route(path, endpoint_for(page), methods=["GET"], name=path)

    @router.post("/sources")
    async def add_source(request: Request, session: Viewer) -> Response:
        form = await read_form(request)
        check_csrf(session, form)
        if not session.is_admin:
            refusal = "Adding a source needs an admin token."
            return await run_in_threadpool(board.sources, request, session, 403,
                                           form_error=refusal)  # fmt: skip
        try:
            name, channel = form.get("name", ""), form.get("channel", "")
            added = await run_in_threadpool(workspace.add_source, name, channel,
                                            form.get("unit") or None)  # fmt: skip
        except SeamlineError as exc:
            return await run_in_threadpool(board.sources, request, session, exc.status,
                                           form_error=exc.message)  # fmt: skip
        return RedirectResponse(f"/sources?added={quote(added['name'])}", 303)

    @router.get("/live")
    def live(request: Request, session: Viewer) -> Response:
        return board.render(request, "live.html", session, title="Live events",
                            recent=list(reversed(board.live.recent())))  # fmt: skip

    @router.get("/live/stream")
    async def live_stream(request: Request, session: Viewer) -> Response:
        viewer = board.live.join()
        if viewer is None:
            return Response("Too many live viewers; try again later.\n", 503,
                            headers={"Retry-After": "10"})  # fmt: skip
        return StreamingResponse(board.live.stream(viewer), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})  # fmt: skip

    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[("seamline.web", "static")]), name="static")
    return board
