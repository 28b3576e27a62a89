"""The dashboard's Paths and Retention pages (``/paths``, ``/retention``).

Both are forms over :meth:`Workspace.paths` and :meth:`Workspace.retention`, served
through the workspace's result cache like the other analysis pages. Bad form values
get a message naming the field, never a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from seamline.errors import BadRequest
from seamline.web import charts
from seamline.web.sessions import Session

if TYPE_CHECKING:
    from seamline.app import Workspace
    from seamline.web.dashboard import Dashboard

PATH_STEPS = (1, 20)
PATH_DEFAULTS = {"steps": 3, "direction": "after", "top": 10, "collapse_repeats": False}
PATH_TOP = (1, 50)
RETENTION_PERIODS = (1, 52)


def _bounded(query: Any, name: str, default: int, bounds: tuple[int, int]) -> int:
    """A whole number form field within bounds, else a BadRequest naming it and the fix."""
    text = (query.get(name) or "").strip()
    if not text:
        return default
    low, high = bounds
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number from {low} to {high}, not '{text}'.",
                         code="invalid_form") from None  # fmt: skip
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be from {low} to {high}; {value} is outside.",
                         code="invalid_form")  # fmt: skip
    return value


def _choice(query: Any, name: str, choices: tuple[str, ...]) -> str:
    value = (query.get(name) or choices[0]).strip()
    if value not in choices:
        raise BadRequest(f"'{name}' must be one of {', '.join(choices)}, not '{value}'.",
                         code="invalid_form")  # fmt: skip
    return value


def default_paths(workspace: Workspace) -> dict[str, Any] | None:
    """The Paths page's first view: after the most common event (precomputed too)."""
    names = workspace.cached("event_names").value
    return {"event": names[0]["event"], **PATH_DEFAULTS} if names else None


def paths_page(board: Dashboard, request: Request, session: Session) -> Response:
    """Top paths after (or before) each person's first chosen event (by default the most
    common event, so the first view shows something, from the precomputed cache)."""
    ws, query = board.workspace, request.query_params
    names = ws.cached("event_names").value
    event = (query.get("event") or "").strip()
    if "event" not in query and names:
        event = names[0]["event"]
    form: dict[str, Any] = {"event": event, "direction": "after", "steps": 3, "top": 10,
                            "collapse": query.get("collapse") == "1"}  # fmt: skip
    result, error, as_of = None, None, None
    try:
        form.update(direction=_choice(query, "direction", ("after", "before")),
                    steps=_bounded(query, "steps", 3, PATH_STEPS),
                    top=_bounded(query, "top", 10, PATH_TOP))  # fmt: skip
        if event:
            cached = ws.cached("paths", event=event, steps=form["steps"],
                               direction=form["direction"], top=form["top"],
                               collapse_repeats=form["collapse"])  # fmt: skip
            result, as_of = cached.value.to_dict(), cached.as_of
    except BadRequest as exc:
        error = exc.message
    status = 400 if error else 200
    return board.render(
        request, "paths.html", session, status=status, title="Paths", names=names, form=form,
        result=result, error=error, as_of=as_of, steps_bounds=PATH_STEPS, top_bounds=PATH_TOP,
        chart=charts.path_bars(result) if result and result["paths"] else None,
    )  # fmt: skip


def retention_page(board: Dashboard, request: Request, session: Session) -> Response:
    """Cohorts by the period of the first start event; share returning per later period."""
    ws, query = board.workspace, request.query_params
    names = ws.cached("event_names").value
    form: dict[str, Any] = {"start_event": (query.get("start_event") or "").strip(),
                            "return_event": (query.get("return_event") or "").strip(),
                            "period": "week", "periods": 8}  # fmt: skip
    result, error, as_of = None, None, None
    try:
        form.update(period=_choice(query, "period", ("week", "day")),
                    periods=_bounded(query, "periods", 8, RETENTION_PERIODS))  # fmt: skip
        cached = ws.cached("retention", start_event=form["start_event"] or None,
                           return_event=form["return_event"] or None, period=form["period"],
                           periods=form["periods"])  # fmt: skip
        result, as_of = cached.value.to_dict(), cached.as_of
    except BadRequest as exc:
        error = exc.message
    status = 400 if error else 200
    return board.render(
        request, "retention.html", session, status=status, title="Retention", names=names,
        form=form, result=result, error=error, as_of=as_of, periods_bounds=RETENTION_PERIODS,
        chart=charts.retention_heatmap(result) if result and result["cohorts"] else None,
    )  # fmt: skip
