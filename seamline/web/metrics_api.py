"""``GET /api/metrics/score``: which metrics matter, the same call as the CLI and Python.

Read scope. Query parameters are checked here (a 400 names the field); the metric and
outcome names are checked by the analysis (also a 400 naming the field).
"""

# No `from __future__ import annotations`: FastAPI must see the `reader` dependency type.
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from seamline.app import Workspace
from seamline.errors import BadRequest


def _naive(value: datetime | None, field: str) -> datetime | None:
    """Times may carry an offset; the store keeps naive UTC."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise BadRequest(f"{field} {value.isoformat()} is out of range.",
                         code="invalid_time") from None  # fmt: skip


def install_metrics_routes(router: APIRouter, workspace: Workspace, reader: Any) -> None:
    """Add the metrics routes to ``router``; ``reader`` is the read-scope dependency type."""

    @router.get("/metrics/score", tags=["analytics"])
    def metrics_score(
        principal: reader,
        outcome: Annotated[str | None, Query(
            max_length=500, description="Outcome event, retention:DAYS or no_costly_contact "
            "(default: the declared outcome events).")] = None,
        metric: Annotated[list[str] | None, Query(
            max_length=30, description="Extra metric (repeat): event:NAME, "
            "property:properties.NAME[:sum|:mean], or a built-in.")] = None,
        observe: Annotated[str, Query(max_length=20, description="Observation window.")] = "14d",
        predict: Annotated[str, Query(max_length=20, description="Outcome window.")] = "30d",
        holdout: Annotated[float, Query(ge=0.1, le=0.9, description="Share held out.")] = 0.5,
        builtins: Annotated[bool, Query(description="Include the built-in metrics.")] = True,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> dict[str, Any]:
        """Candidate metrics ranked by held-out AUC for the outcome, with interval, Spearman,
        sensitivity, stability, inflatability and a verdict (predictive, weak, vanity)."""
        return workspace.metrics_score(
            outcome, metric, observe, predict, holdout=holdout, builtins=builtins,
            start=_naive(start, "start"), end=_naive(end, "end"),
        ).to_dict()  # fmt: skip
