"""The dashboard's Metrics page (``/metrics``): which metrics matter, as a table and a chart.

A form over :meth:`Workspace.metrics_score`. The page starts with shorter windows than the
CLI (observe 7d, predict 14d) so that a workspace with a month of history, like the demo,
has persons whose outcome window has ended. Bad form values get a message naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from seamline.errors import BadRequest
from seamline.web import charts
from seamline.web.sessions import Session

if TYPE_CHECKING:
    from seamline.web.dashboard import Dashboard

PAGE_OBSERVE, PAGE_PREDICT = "7d", "14d"
VERDICT_COLOURS = {"predictive": "#009E73", "weak": "#E69F00", "vanity": "#D55E00",
                   "insufficient_data": "#6B6B6B"}  # fmt: skip
MAX_FORM_METRICS = 10


def auc_chart(metrics: list[dict[str, Any]]) -> charts.Figure:
    """Held-out AUC per metric (best on top) with its 95% interval; chance (0.5) and the
    predictive threshold (0.55) as vertical lines; colour = verdict."""
    shown = [m for m in metrics if m["auc"] is not None][::-1]  # Plotly draws bottom-up
    trace = {
        "type": "scatter", "mode": "markers", "orientation": "h",
        "x": [m["auc"] for m in shown], "y": [m["metric"] for m in shown],
        "error_x": {"type": "data", "symmetric": False, "thickness": 2, "width": 4,
                    "array": [round(m["ci_high"] - m["auc"], 4) for m in shown],
                    "arrayminus": [round(m["auc"] - m["ci_low"], 4) for m in shown],
                    "color": "#6B6B6B"},
        "marker": {"size": 11, "color": [VERDICT_COLOURS[m["verdict"]] for m in shown]},
        "customdata": [[m["verdict"], m["ci_low"], m["ci_high"]] for m in shown],
        "hovertemplate": "%{y}: AUC %{x:.2f} (95%% CI %{customdata[1]:.2f} to "
                         "%{customdata[2]:.2f}), %{customdata[0]}<extra></extra>",
    }  # fmt: skip

    def line(x: float, colour: str, dash: str) -> dict[str, Any]:
        return {"type": "line", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
                "line": {"color": colour, "width": 1, "dash": dash}}  # fmt: skip

    layout = charts._layout(
        height=max(220, 60 + 34 * len(shown)), showlegend=False,
        xaxis={"title": {"text": "held-out AUC (0.5 = chance)"},
               "range": [min([0.3, *(m["ci_low"] - 0.02 for m in shown)]), 1.0],
               "gridcolor": "#e5e7eb"},
        yaxis={"automargin": True},
        shapes=[line(0.5, "#6B6B6B", "dash"), line(0.55, "#009E73", "dot")],
        margin={"l": 56, "r": 24, "t": 16, "b": 48},
    )  # fmt: skip
    return {"data": [trace], "layout": layout}


def _form_metrics(query: Any) -> list[str]:
    """Extra metrics from the form: one per line (or repeated ``metric`` fields)."""
    lines = [part.strip() for value in query.getlist("metric") for part in value.splitlines()]
    named = [line for line in lines if line]
    if len(named) > MAX_FORM_METRICS:
        raise BadRequest(f"'metric': at most {MAX_FORM_METRICS} extra metrics on this page.",
                         code="invalid_form")  # fmt: skip
    return named


def metrics_page(board: Dashboard, request: Request, session: Session) -> Response:
    """Candidate metrics ranked by held-out AUC for the chosen outcome, with verdicts."""
    ws, query = board.workspace, request.query_params
    form: dict[str, Any] = {
        "outcome": (query.get("outcome") or "").strip(),
        "metric": "\n".join(query.getlist("metric")).strip(),
        "observe": (query.get("observe") or PAGE_OBSERVE).strip(),
        "predict": (query.get("predict") or PAGE_PREDICT).strip(),
    }
    names = ws.cached("event_names").value
    result, error, as_of = None, None, None
    try:
        # from the result cache while no new data arrived (like the other analysis pages)
        cached = ws.cached("metrics_score", outcome=form["outcome"] or None,
                           metrics=_form_metrics(query) or None, observe=form["observe"],
                           predict=form["predict"])  # fmt: skip
        result, as_of = cached.value.to_dict(), cached.as_of
    except BadRequest as exc:
        error = exc.message
    status = 400 if error else 200
    scored = [m for m in (result or {}).get("metrics", []) if m["auc"] is not None]
    return board.render(
        request, "metrics.html", session, status=status, title="Metrics", form=form,
        names=names, result=result, error=error, as_of=as_of, colours=VERDICT_COLOURS,
        chart=auc_chart(scored) if scored else None,
    )  # fmt: skip
