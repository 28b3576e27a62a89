"""Accounts under ``/api/accounts`` and the audit log at ``/api/audit``: admin scope.

These are the CLI's calls (`seamline accounts ...`) while a server owns the workspace;
an invite's link points at the address the request came to.
"""

# No `from __future__ import annotations`: FastAPI must see the `admin` dependency type.
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from seamline.app import Workspace


class InviteIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    role: str = Field(description="viewer, analyst or admin")
    name: str | None = Field(default=None, max_length=200)


class RoleIn(BaseModel):
    role: str = Field(description="viewer, analyst or admin")


def install_accounts_routes(router: APIRouter, workspace: Workspace, admin: Any) -> None:
    """Add the account routes to ``router``; ``admin`` is the admin-scope dependency type."""

    @router.post("/accounts/invites", status_code=201, tags=["accounts"])
    def invite(body: InviteIn, request: Request, principal: admin) -> dict[str, Any]:
        """Invite a dashboard user; the answer's one-time ``link`` is shown only here."""
        return workspace.accounts.invite(
            body.email, body.role, name=body.name, actor=principal.name,
            ip=request.client.host if request.client else None,
            base_url=str(request.base_url),
        )  # fmt: skip

    @router.get("/accounts", tags=["accounts"])
    def list_accounts(principal: admin) -> list[dict[str, Any]]:
        """Accounts with role and status (never a password, secret or code)."""
        return workspace.list_accounts()

    @router.post("/accounts/{email}/disable", tags=["accounts"])
    def disable(email: str, principal: admin) -> dict[str, Any]:
        """Disable an account; its dashboard sessions end at their next request."""
        return workspace.disable_account(unquote(email), actor=principal.name)

    @router.post("/accounts/{email}/role", tags=["accounts"])
    def set_role(email: str, body: RoleIn, principal: admin) -> dict[str, Any]:
        """Change an account's role; its sessions act with the new role at once."""
        return workspace.set_account_role(unquote(email), body.role, actor=principal.name)

    @router.get("/audit", tags=["accounts"])
    def audit(
        principal: admin,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
        action: Annotated[str | None, Query(description="Prefix, e.g. sign_in")] = None,
    ) -> list[dict[str, Any]]:
        """Sign-ins (ok, failed, locked) and admin actions, newest first."""
        return workspace.audit_log(limit, action)
