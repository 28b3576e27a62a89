"""Dashboard pages for accounts: invite enrolment, and the admin pages.

- ``/invite/{token}``: a one-time invite link. Step 1 sets a password, step 2 enrols
  an authenticator app (QR code rendered as inline SVG by ``segno``, plus the secret as
  text) and must be confirmed with a valid code, step 3 shows the recovery codes once.
  These pages work without a session; their forms carry a double-submit CSRF token.
- ``/admin/accounts`` (invite, change role, disable), ``/admin/tokens`` (create an API
  token, shown once; revoke, which ends that token's dashboard sessions at their next
  request) and ``/admin/audit`` (the audit log). Admins only: others get a 403 page.
"""

# No "from __future__ import annotations": FastAPI must resolve the local Viewer alias.
import secrets
from collections.abc import Callable
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from markupsafe import Markup
from starlette.responses import RedirectResponse, Response

from seamline.accounts import ROLES
from seamline.accounts.service import Enrolment
from seamline.app import Workspace
from seamline.errors import SeamlineError
from seamline.store.database import SCOPES
from seamline.web.access import (
    FormRefused,
    check_csrf,
    client_address,
    read_form,
    require_role,
    viewer_dependency,
)
from seamline.web.sessions import SIGN_IN_COOKIE, Session, SessionStore, clear_cookie, set_cookie

Render = Callable[..., Response]
ADMIN_PAGES = (("/admin/accounts", "Accounts"), ("/admin/tokens", "API tokens"),
               ("/admin/audit", "Audit log"))  # fmt: skip
AUDIT_FILTERS = ("", "sign_in", "account", "token")


def qr_svg(uri: str) -> Markup:
    """The otpauth:// URI as an inline SVG QR code (no script, no external request)."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#111111", light="#ffffff")
    return Markup(svg)  # segno's own markup; the URI is encoded only in the modules


def install_accounts(router: APIRouter, workspace: Workspace, sessions: SessionStore,
                     render: Render) -> None:  # fmt: skip
    """Add the invite and admin routes to the dashboard's router."""
    accounts = workspace.accounts
    Viewer = Annotated[Session, Depends(viewer_dependency(sessions))]

    # -- invite enrolment (no session yet) --------------------------------------------
    def invite_page(request: Request, template: str, status: int = 200,
                    **context: Any) -> Response:  # fmt: skip
        token = secrets.token_urlsafe(32)
        response = render(request, template, None, status=status, title="Set up your account",
                          form_csrf=token, **context)  # fmt: skip
        set_cookie(response, request, SIGN_IN_COOKIE, token)
        return response

    def invalid_invite(request: Request, exc: SeamlineError) -> Response:
        # like every dashboard page without a session: to the sign-in page, which explains
        # (an enrolled person who reuses the link only needs to sign in)
        return RedirectResponse("/sign-in?invite=invalid", 303)

    def enrol_page(request: Request, token: str, enrolment: Enrolment, status: int = 200,
                   error: str | None = None) -> Response:  # fmt: skip
        return invite_page(request, "invite_totp.html", status, token=token, error=error,
                           email=enrolment.email, secret=enrolment.secret,
                           qr=qr_svg(enrolment.uri), uri=enrolment.uri)  # fmt: skip

    async def pre_session_form(request: Request) -> dict[str, str]:
        form = await read_form(request)
        cookie, sent = request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")
        if not cookie or not sent or not secrets.compare_digest(cookie, sent):
            raise FormRefused("missing or wrong form token")
        return form

    @router.get("/invite/{token}")
    def invite(request: Request, token: str) -> Response:
        try:
            account = accounts.invitation(token)
            enrolment = accounts.enrolment(token)
        except SeamlineError as exc:
            return invalid_invite(request, exc)
        if enrolment is not None:  # the password is set: continue with the authenticator
            return enrol_page(request, token, enrolment)
        return invite_page(request, "invite_password.html", token=token, email=account.email,
                           role=account.role,
                           minimum=workspace.settings.password_min_length)  # fmt: skip

    @router.post("/invite/{token}")
    async def set_password(request: Request, token: str) -> Response:
        form = await pre_session_form(request)
        try:
            account = await run_in_threadpool(accounts.invitation, token)
        except SeamlineError as exc:
            return invalid_invite(request, exc)
        try:
            enrolment = await run_in_threadpool(accounts.set_password, token,
                                                form.get("password", ""),
                                                form.get("confirm", ""))  # fmt: skip
        except SeamlineError as exc:
            return invite_page(request, "invite_password.html", exc.status, token=token,
                               email=account.email, role=account.role, error=exc.message,
                               minimum=workspace.settings.password_min_length)  # fmt: skip
        return enrol_page(request, token, enrolment)

    @router.post("/invite/{token}/totp")
    async def confirm_totp(request: Request, token: str) -> Response:
        form = await pre_session_form(request)
        try:
            enrolment = await run_in_threadpool(accounts.enrolment, token)
        except SeamlineError as exc:
            return invalid_invite(request, exc)
        if enrolment is None:
            return RedirectResponse(f"/invite/{token}", 303)
        try:
            codes = await run_in_threadpool(accounts.confirm_totp, token, form.get("code", ""),
                                            client_address(request))  # fmt: skip
        except SeamlineError as exc:
            return enrol_page(request, token, enrolment, exc.status, exc.message)
        response = render(request, "invite_done.html", None, title="Save your recovery codes",
                          email=enrolment.email, codes=codes)  # fmt: skip
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return response

    # -- admin pages ------------------------------------------------------------------
    def admin_page(request: Request, session: Session, template: str, title: str,
                   status: int = 200, **context: Any) -> Response:  # fmt: skip
        return render(request, template, session, status=status, title=title,
                      admin_pages=ADMIN_PAGES, **context)  # fmt: skip

    def accounts_page(request: Request, session: Session, status: int = 200,
                      **extra: Any) -> Response:  # fmt: skip
        return admin_page(request, session, "admin_accounts.html", "Accounts", status,
                          accounts=accounts.describe(), roles=ROLES,
                          **{**shown_once(session), **extra})  # fmt: skip

    def tokens_page(request: Request, session: Session, status: int = 200,
                    **extra: Any) -> Response:  # fmt: skip
        return admin_page(request, session, "admin_tokens.html", "API tokens", status,
                          tokens=workspace.tokens(), scopes=SCOPES,
                          **{**shown_once(session), **extra})  # fmt: skip

    @router.get("/admin")
    def admin_home(session: Viewer) -> Response:
        require_role(session, "admin")
        return RedirectResponse("/admin/accounts", 303)

    @router.get("/admin/accounts")
    def accounts_list(request: Request, session: Viewer) -> Response:
        require_role(session, "admin")
        return accounts_page(request, session)

    async def admin_form(request: Request, session: Session) -> dict[str, str]:
        form = await read_form(request)
        check_csrf(session, form)
        require_role(session, "admin")
        return form

    async def attempt(request: Request, session: Session, page: Callable[..., Response],
                      call: Callable[[], dict[str, Any]], done: str) -> Response:  # fmt: skip
        """Run an admin call; on success redirect to the page, which shows the result once.

        The result (a new token's secret, an invite link) waits in the session, not in
        the URL, and a reload of the page cannot post the form again.
        """
        try:
            result = await run_in_threadpool(call)
        except SeamlineError as exc:
            return await run_in_threadpool(page, request, session, exc.status,
                                           form_error=exc.message)  # fmt: skip
        session.flash = {"done": done, "result": result}
        back = "/admin/tokens" if page is tokens_page else "/admin/accounts"
        return RedirectResponse(back, 303)

    def shown_once(session: Session) -> dict[str, Any]:
        flash, session.flash = session.flash or {}, None
        return flash

    @router.post("/admin/accounts/invite")
    async def invite_account(request: Request, session: Viewer) -> Response:
        form = await admin_form(request, session)
        base = str(request.base_url).rstrip("/")
        return await attempt(request, session, accounts_page, lambda: accounts.invite(
            form.get("email", ""), form.get("role", ""), name=form.get("name") or None,
            actor=session.name, ip=client_address(request), base_url=base), "invited")  # fmt: skip

    @router.post("/admin/accounts/role")
    async def change_role(request: Request, session: Viewer) -> Response:
        form = await admin_form(request, session)
        return await attempt(request, session, accounts_page, lambda: accounts.set_role(
            form.get("email", ""), form.get("role", ""), actor=session.name,
            ip=client_address(request)), "role")  # fmt: skip

    @router.post("/admin/accounts/disable")
    async def disable_account(request: Request, session: Viewer) -> Response:
        form = await admin_form(request, session)
        return await attempt(request, session, accounts_page, lambda: accounts.disable(
            form.get("email", ""), actor=session.name, ip=client_address(request)),
            "disabled")  # fmt: skip

    @router.get("/admin/tokens")
    def tokens_list(request: Request, session: Viewer) -> Response:
        require_role(session, "admin")
        return tokens_page(request, session)

    @router.post("/admin/tokens")
    async def create_token(request: Request, session: Viewer) -> Response:
        form = await admin_form(request, session)
        name = form.get("name", "").strip()

        def create() -> dict[str, Any]:
            if not name:
                raise SeamlineError("A token needs a name (who or what uses it).",
                                    code="invalid_name")  # fmt: skip
            return workspace.add_token(name, form.get("scope", ""), actor=session.name,
                                       ip=client_address(request))  # fmt: skip

        return await attempt(request, session, tokens_page, create, "created")

    @router.post("/admin/tokens/revoke")
    async def revoke_token(request: Request, session: Viewer) -> Response:
        form = await admin_form(request, session)
        return await attempt(request, session, tokens_page, lambda: workspace.revoke_token(
            form.get("name", ""), actor=session.name, ip=client_address(request)),
            "revoked")  # fmt: skip

    @router.get("/admin/audit")
    def audit(request: Request, session: Viewer) -> Response:
        require_role(session, "admin")
        action = request.query_params.get("action", "")
        action = action if action in AUDIT_FILTERS else ""
        entries = accounts.audit(500, action or None)
        return admin_page(request, session, "admin_audit.html", "Audit log", entries=entries,
                          action=action, filters=AUDIT_FILTERS)  # fmt: skip
