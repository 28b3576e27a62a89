"""Moments under ``/api/moments`` and ``/api/deliveries``: the CLI's calls, admin scope.

Rules carry destination URLs and signing secrets, and the outbox holds payloads, so
every route needs an admin token (list and stats never show a secret).
"""

# No `from __future__ import annotations`: FastAPI must see the `admin` dependency type.
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from seamline.app import Workspace
from seamline.errors import BadRequest


class MomentIn(BaseModel):
    text: str | None = Field(default=None, description="The rule as YAML or JSON text.",
                             max_length=200_000)  # fmt: skip
    definition: dict[str, Any] | None = Field(default=None, description="The rule as JSON.")


def install_moments_routes(router: APIRouter, workspace: Workspace, admin: Any) -> None:
    """Add the moment routes to ``router``; ``admin`` is the admin-scope dependency type."""

    @router.post("/moments", status_code=201, tags=["moments"])
    def add_moment(body: MomentIn, principal: admin) -> dict[str, Any]:
        """Save a rule (same name: replaced as a new version). Destinations are SSRF-checked."""
        if (body.text is None) == (body.definition is None):
            raise BadRequest("Send the rule as 'text' (YAML or JSON) or as 'definition'.",
                             code="invalid_rule")  # fmt: skip
        return workspace.add_moment(body.text if body.text is not None else body.definition or {})

    @router.get("/moments", tags=["moments"])
    def list_moments(principal: admin) -> list[dict[str, Any]]:
        """Every rule, secrets redacted."""
        return workspace.list_moments()

    @router.get("/moments/stats", tags=["moments"])
    def moment_stats(principal: admin) -> dict[str, Any]:
        """Per rule: triggered, cancelled (unless/exit), capped, quiet hours, sent, failed."""
        return workspace.moment_stats()

    @router.post("/moments/{name}/disable", tags=["moments"])
    def disable_moment(name: str, principal: admin) -> dict[str, Any]:
        """Stop starting moments for this rule; open ones are cancelled when they come due."""
        return workspace.disable_moment(name)

    @router.post("/moments/{name}/enable", tags=["moments"])
    def enable_moment(name: str, principal: admin) -> dict[str, Any]:
        return workspace.enable_moment(name)

    @router.get("/moments/{name}/test", tags=["moments"])
    def test_moment(
        name: str,
        principal: admin,
        person: Annotated[str, Query(min_length=1, description="Any identifier of the person.")],
        replay_history: bool = False,
    ) -> dict[str, Any]:
        """Dry run over the person's stored journey: what would fire, when, or why not.
        ``replay_history``: as if the journey arrived live after the rule was saved."""
        return workspace.test_moment(name, person, replay_history)

    @router.post("/places", status_code=201, tags=["moments"])
    def add_places(body: MomentIn, principal: admin) -> dict[str, Any]:
        """Save workspace places (``{places: [{name, lat, lon, radius, beacons}]}``)."""
        if (body.text is None) == (body.definition is None):
            raise BadRequest("Send the places as 'text' (YAML or JSON) or as 'definition'.",
                             code="invalid_places")  # fmt: skip
        return workspace.add_places(body.text if body.text is not None else body.definition or {})

    @router.get("/places", tags=["moments"])
    def list_places(principal: admin) -> list[dict[str, Any]]:
        """The workspace's places for location moments."""
        return workspace.list_places()

    @router.delete("/places/{name}", tags=["moments"])
    def remove_place(name: str, principal: admin) -> dict[str, Any]:
        """Remove a place no rule uses (and everyone's state there)."""
        return workspace.remove_place(name)

    @router.get("/deliveries", tags=["moments"])
    def deliveries(
        principal: admin,
        failed: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        moment: str | None = None,
    ) -> list[dict[str, Any]]:
        """The outbox, newest first; ``failed=true``: the dead letters (failed, expired)."""
        return workspace.deliveries(failed, limit, moment)

    @router.post("/deliveries/{delivery_id}/replay", tags=["moments"])
    def replay(delivery_id: str, principal: admin) -> dict[str, Any]:
        """Send a dead letter again under the same webhook-id."""
        return workspace.replay_delivery(delivery_id)
