"""``seamline accounts ...``: dashboard accounts and the audit log (registered by ``cli.py``).

Like every command, these go through the running server when one owns the workspace.
"""

from __future__ import annotations

import click
from rich.table import Table

from seamline import cli

pass_ctx = click.make_pass_decorator(cli.Context)
ROLE_CHOICE = click.Choice(["viewer", "analyst", "admin"])


@click.group()
def accounts() -> None:
    """Dashboard accounts: invite people, change roles, disable, read the audit log."""


@accounts.command("invite")
@click.argument("email")
@click.option("--role", type=ROLE_CHOICE, default="viewer", show_default=True,
              help="viewer sees pages; analyst also runs analyses; admin manages everything.")
@click.option("--name", default=None, help="The person's name, shown in the dashboard.")
@pass_ctx
@cli.handle_errors
def accounts_invite(ctx: cli.Context, email: str, role: str, name: str | None) -> None:
    """Invite EMAIL and print the one-time enrolment link (shown only now)."""
    with cli._open(ctx) as ws:
        result = ws.invite_account(email, role, name)

    def human() -> None:
        cli.err.print(f"Invited {result['email']} as {result['role']}; the link works once, "
                      f"until {result['expires_at'][:16].replace('T', ' ')} UTC:",
                      highlight=False)  # fmt: skip
        click.echo(result["link"])

    ctx.emit(result, human)


@accounts.command("list")
@pass_ctx
@cli.handle_errors
def accounts_list(ctx: cli.Context) -> None:
    """Accounts with their role, status and last sign-in."""
    cli.show_table(ctx, lambda ws: ws.list_accounts(),
                   ("email", "name", "role", "status", "last sign-in"),
                   lambda a: [a["email"], a["name"] or "", a["role"],
                              a["status"] + (" (locked)" if a.get("locked_until") else ""),
                              (a["last_sign_in_at"] or "never")[:19]])  # fmt: skip


@accounts.command("disable")
@click.argument("email")
@pass_ctx
@cli.handle_errors
def accounts_disable(ctx: cli.Context, email: str) -> None:
    """Disable an account; its dashboard sessions end at their next request."""
    cli.act(ctx, lambda ws: ws.disable_account(email), lambda r: f"{r['email']} disabled")


@accounts.command("role")
@click.argument("email")
@click.argument("role", type=ROLE_CHOICE)
@pass_ctx
@cli.handle_errors
def accounts_role(ctx: cli.Context, email: str, role: str) -> None:
    """Change an account's role (applies to its open sessions at once)."""
    cli.act(ctx, lambda ws: ws.set_account_role(email, role),
            lambda r: f"{r['email']}: {r['previous_role']} -> {r['role']}")


@accounts.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--action", default=None, help="Only actions starting with this, e.g. sign_in.")
@pass_ctx
@cli.handle_errors
def accounts_audit(ctx: cli.Context, limit: int, action: str | None) -> None:
    """The audit log: sign-ins (ok, failed, locked) and admin actions, newest first."""
    with cli._open(ctx) as ws:
        result = ws.audit_log(limit, action)

    def human() -> None:
        table = Table("when", "action", "who", "subject", "address", "detail")
        for e in result:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(e["detail"].items()))
            table.add_row(e["at"][:19], e["action"], e["actor"], e["subject"] or "",
                          e["ip"] or "", detail)  # fmt: skip
        cli.out.print(table)

    ctx.emit(result, human)
