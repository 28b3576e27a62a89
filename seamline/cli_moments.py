"""``seamline moments ...``: real-time rules and their deliveries (registered by ``cli.py``).

Like every command, these go through the running server when one owns the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from seamline import cli

pass_ctx = click.make_pass_decorator(cli.Context)


@click.group()
def moments() -> None:
    """Moments: real-time rules that send signed webhooks, push, SMS or email."""


@moments.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
@cli.handle_errors
def moments_add(ctx: cli.Context, file: Path) -> None:
    """Save the rule in FILE (YAML or JSON); a rule with the same name is replaced."""
    text = cli.read_text(file)

    def said(result: dict[str, Any]) -> str:
        verb = "added" if result["created"] else f"replaced (version {result['version']})"
        return f"moment '{result['name']}' {verb}"

    cli.act(ctx, lambda ws: ws.add_moment(text), said)


@moments.command("list")
@pass_ctx
@cli.handle_errors
def moments_list(ctx: cli.Context) -> None:
    """Rules with their trigger, unless window, policies and actions (no secrets)."""
    with cli._open(ctx) as ws:
        result = ws.list_moments()

    def human() -> None:
        table = Table("name", "enabled", "trigger", "unless", "re-entry", "actions")
        for r in result:
            unless = ", ".join(f"{u['event']} within {u['within']:g}s" for u in r["unless"])
            actions = ", ".join(f"{a['kind']} {a['url']}" for a in r["actions"])
            table.add_row(r["name"], str(r["enabled"]), r["trigger"], unless, r["reentry"], actions)
        cli.out.print(table)

    ctx.emit(result, human)


@moments.command("disable")
@click.argument("name")
@pass_ctx
@cli.handle_errors
def moments_disable(ctx: cli.Context, name: str) -> None:
    """Stop a rule; its open moments are cancelled when they come due."""
    cli.act(ctx, lambda ws: ws.disable_moment(name), lambda _: f"moment '{name}' disabled")


@moments.command("enable")
@click.argument("name")
@pass_ctx
@cli.handle_errors
def moments_enable(ctx: cli.Context, name: str) -> None:
    """Start a disabled rule again."""
    cli.act(ctx, lambda ws: ws.enable_moment(name), lambda _: f"moment '{name}' enabled")


@moments.command("test")
@click.argument("name")
@click.option("--person", required=True, help="Any identifier of the person.")
@click.option("--replay-history", is_flag=True,
              help="Replay as if the journey arrived live after the rule was saved.")
@pass_ctx
@cli.handle_errors
def moments_test(ctx: cli.Context, name: str, person: str, replay_history: bool) -> None:
    """Dry run of NAME over a person's stored journey: what would fire, when, or why not."""
    with cli._open(ctx) as ws:
        result = ws.test_moment(name, person, replay_history)

    def human() -> None:
        cli.out.print(f"[bold]{name}[/] for person {result['person_id']} "
                      f"({result['events']} events)", highlight=False)  # fmt: skip
        if not result["moments"]:
            cli.out.print("no trigger in this journey")
        for m in result["moments"]:
            line = f"{m['trigger']['timestamp']} {m['trigger']['event']}: {m['outcome']}"
            if m["outcome"] == "cancelled":
                line += f" by {m['by']['event']} at {m['at']}"
            elif m["outcome"] in ("fires", "waiting"):
                line += f" at {m['at']}"
            elif m.get("reason"):
                line += f" ({m['reason']})"
            if m.get("held_until"):
                line += f" (held for quiet hours until {m['held_until']})"
            cli.out.print(line, highlight=False, markup=False, soft_wrap=True)

    ctx.emit(result, human)


@moments.group("places")
def moments_places() -> None:
    """Named places (geofences and beacons) for location moments."""


@moments_places.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
@cli.handle_errors
def places_add(ctx: cli.Context, file: Path) -> None:
    """Save the places in FILE (YAML or JSON: places: [{name, lat, lon, radius, beacons}])."""
    text = cli.read_text(file)
    cli.act(ctx, lambda ws: ws.add_places(text), lambda r: f"saved {', '.join(r['saved'])}")


@moments_places.command("list")
@pass_ctx
@cli.handle_errors
def places_list(ctx: cli.Context) -> None:
    """The workspace's places."""
    cli.show_table(ctx, lambda ws: ws.list_places(),
                   ("name", "lat", "lon", "radius m", "beacons"),
                   lambda p: [p["name"], str(p["lat"]), str(p["lon"]), f"{p['radius']:g}",
                              ", ".join(p["beacons"])])  # fmt: skip


@moments_places.command("remove")
@click.argument("name")
@pass_ctx
@cli.handle_errors
def places_remove(ctx: cli.Context, name: str) -> None:
    """Remove a place that no rule uses."""
    cli.act(ctx, lambda ws: ws.remove_place(name), lambda _: f"place '{name}' removed")


@moments.command("stats")
@pass_ctx
@cli.handle_errors
def moments_stats(ctx: cli.Context) -> None:
    """Per rule: triggered, cancelled by unless, capped, sent, failed."""
    with cli._open(ctx) as ws:
        result = ws.moment_stats()

    def human() -> None:
        columns = ("triggered", "waiting", "cancelled_unless", "cancelled_exit", "capped",
                   "quiet_hours", "fired", "sent", "failed", "pending", "late_cancels")  # fmt: skip
        table = Table("moment", *(c.replace("_", " ") for c in columns))
        for r in result["moments"]:
            table.add_row(r["name"], *(str(r[c]) for c in columns))
        cli.out.print(table)

    ctx.emit(result, human)


@moments.command("deliveries")
@click.option("--failed", is_flag=True, help="Only the dead letters (failed or expired).")
@click.option("--moment", default=None, help="Only this rule's deliveries.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@pass_ctx
@cli.handle_errors
def moments_deliveries(ctx: cli.Context, failed: bool, moment: str | None, limit: int) -> None:
    """The outbox, newest first: status, attempts, last answer."""
    with cli._open(ctx) as ws:
        result = ws.deliveries(failed, limit, moment)

    def human() -> None:
        table = Table("id", "moment", "kind", "target", "status", "attempts", "last", "created")
        for d in result:
            last = d["last_error"] or (str(d["last_status"]) if d["last_status"] else "")
            table.add_row(d["delivery_id"], d["moment"] or "", d["kind"], d["target"], d["status"],
                          str(d["attempts"]), last, d["created_at"])  # fmt: skip
        cli.out.print(table)

    ctx.emit(result, human)


@moments.command("replay")
@click.argument("delivery_id")
@pass_ctx
@cli.handle_errors
def moments_replay(ctx: cli.Context, delivery_id: str) -> None:
    """Send a failed or expired delivery again (same webhook-id: receivers dedupe)."""
    with cli._open(ctx) as ws:
        result: dict[str, Any] = ws.replay_delivery(delivery_id)
    ctx.emit(result, lambda: cli.err.print(f"delivery {delivery_id} queued again",
                                           highlight=False))  # fmt: skip
