"""The ``seamline`` command line: the same calls as the JSON and Python APIs.

Every command takes ``--data DIR`` (default ``$SEAMLINE_DATA`` or ``./seamline-data``)
and ``--json`` (machine-readable output on stdout, nothing else there). Errors are
one clear line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from seamline import __version__
from seamline.app import CHANNELS, DEFAULT_DATA_DIR, Workspace
from seamline.cli_engine import engine_options, open_engine
from seamline.client import RemoteWorkspace, connect, running_server
from seamline.errors import BadRequest, SeamlineError

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True)
out = Console()


class Context:
    def __init__(self, data: Path, as_json: bool):
        self.data = data
        self.json = as_json

    def emit(self, payload: Any, human: Callable[[], None]) -> None:
        if self.json:
            click.echo(json.dumps(payload, default=str))
        else:
            human()


def handle_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SeamlineError as exc:
            # escaped: messages quote step filters and extras like 'seamline[spark]'
            err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, markup=True,
                      soft_wrap=True)  # fmt: skip
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__, prog_name="seamline")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SEAMLINE_DATA",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Workspace directory (env SEAMLINE_DATA).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.pass_context
def main(ctx: click.Context, data: Path, as_json: bool) -> None:
    """Seamline: Segment-compatible collection and customer-journey analytics."""
    ctx.obj = Context(data, as_json)


pass_ctx = click.make_pass_decorator(Context)


def _open(ctx: Context) -> Workspace | RemoteWorkspace:
    return connect(ctx.data)


def act(ctx: Context, call: Callable[[Any], Any], said: Callable[[Any], str]) -> None:
    """Run ``call(workspace)`` and say one line about its result on stderr (--json: the
    result on stdout). The shape of every one-action command."""
    with _open(ctx) as ws:
        result = call(ws)
    ctx.emit(result, lambda: err.print(said(result), highlight=False))


def show_table(ctx: Context, call: Callable[[Any], list[dict[str, Any]]],
               headers: tuple[str, ...], row: Callable[[dict[str, Any]], list[str]]) -> None:
    """Run ``call(workspace)`` and print its items as a table, one ``row(item)`` each."""
    with _open(ctx) as ws:
        result = call(ws)

    def human() -> None:
        table = Table(*headers)
        for item in result:
            table.add_row(*row(item))
        out.print(table)

    ctx.emit(result, human)


def read_text(file: Path) -> str:
    """A text file named on the command line, or a clear error."""
    try:
        return file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Cannot read {file}: {exc}", code="unreadable_file") from None


def _analytics(ctx: Context, engine: str, lake: str | None, spark_master: str | None) -> Any:
    """The workspace (``--engine duckdb``) or the lake on Spark (``--engine spark``)."""
    return open_engine(ctx.data, engine, lake, spark_master, lambda: _open(ctx))


# -- serve ---------------------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8088, show_default=True, type=int)
@click.option("--lake", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also publish to this Parquet lake continuously.")  # fmt: skip
@click.option("--lake-interval", default=60.0, show_default=True, help="Seconds between exports.")
@pass_ctx
@handle_errors
def serve(ctx: Context, host: str, port: int, lake: Path | None, lake_interval: float) -> None:
    """Serve the collection API and the JSON API."""
    from seamline.web import serve as run

    _serve(ctx, host, port, run, lake, lake_interval)


def _serve(ctx: Context, host: str, port: int, run: Callable[..., None],
           lake: Path | None = None, lake_interval: float = 60.0) -> None:  # fmt: skip
    if running_server(ctx.data):
        raise SeamlineError(f"A server already owns {ctx.data}; stop it first.", status=409)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # a crash in native code (DuckDB, the JSON decoder) then leaves every thread's Python
    # stack in the server's log instead of a silent exit
    faulthandler.enable()
    workspace = Workspace(ctx.data)
    if lake is not None:
        workspace.publish_lake(lake.resolve(), lake_interval)
    err.print(f"Seamline {__version__}: workspace {ctx.data.resolve()}, http://{host}:{port}")
    run(workspace, host=host, port=port)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8088, show_default=True, type=int)
@click.option("--people", default=2000, show_default=True, help="Customers to simulate.")
@click.option("--seed", default=7, show_default=True)
@click.option("--no-serve", is_flag=True, help="Build the demo workspace and exit.")
@pass_ctx
@handle_errors
def demo(ctx: Context, host: str, port: int, people: int, seed: int, no_serve: bool) -> None:
    """Build a demo workspace with multi-channel journeys, then serve it."""
    from seamline.demo import build_demo, write_demo_settings
    from seamline.web import serve as run

    write_demo_settings(ctx.data)  # the demo bank's outcomes, unless settings.json sets them
    with Workspace(ctx.data) as workspace:
        summary = build_demo(workspace, people=people, seed=seed, console=err)
        # a read token made for this run, so the dashboard can be opened at once
        summary["read_token"] = workspace.add_token("demo-dashboard", "read")["token"]
    url_host = f"[{host}]" if ":" in host else host
    summary["dashboard_url"] = f"http://{url_host}:{port}/"

    def human() -> None:
        err.print(
            f"Demo workspace ready: {summary['people']} people, {summary['events']} new events "
            f"({summary['duplicates']} already there) in {len(summary['sources'])} sources."
        )
        where = "Dashboard" if not no_serve else "Dashboard (after `seamline serve`)"
        err.print(f"{where}: {summary['dashboard_url']}", highlight=False)
        err.print(f"Sign in with this read token: {summary['read_token']}", highlight=False)

    ctx.emit(summary, human)
    if not no_serve:
        _serve(ctx, host, port, run)


# -- sources and tokens ------------------------------------------------------------------
@main.group()
def sources() -> None:
    """Sources: where events come from, each with a public write key."""


@sources.command("add")
@click.argument("name")
@click.option("--channel", required=True, help=f"One of: {', '.join(CHANNELS)}.")
@click.option("--unit", default=None, help="Business unit that owns this source.")
@pass_ctx
@handle_errors
def sources_add(ctx: Context, name: str, channel: str, unit: str | None) -> None:
    """Create a source and print its write key."""
    with _open(ctx) as ws:
        result = ws.add_source(name, channel, unit)
    ctx.emit(result, lambda: click.echo(result["write_key"]))


@sources.command("list")
@pass_ctx
@handle_errors
def sources_list(ctx: Context) -> None:
    """List sources with their channel, unit and write key."""
    show_table(ctx, lambda ws: ws.sources(), ("name", "channel", "unit", "write key"),
               lambda s: [s["name"], s["channel"], s["unit"] or "", s["write_key"]])


@main.group()
def tokens() -> None:
    """API tokens for reading (read scope) and managing (admin scope)."""


@tokens.command("add")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "admin"]), required=True)
@pass_ctx
@handle_errors
def tokens_add(ctx: Context, name: str, scope: str) -> None:
    """Create an API token and print it (it is shown only once)."""
    with _open(ctx) as ws:
        result = ws.add_token(name, scope)
    ctx.emit(result, lambda: click.echo(result["token"]))


@tokens.command("revoke")
@click.argument("name")
@pass_ctx
@handle_errors
def tokens_revoke(ctx: Context, name: str) -> None:
    """Revoke the API tokens with this name (to rotate: add the new one, then revoke)."""
    with _open(ctx) as ws:
        result = ws.revoke_token(name)
    ctx.emit(result, lambda: click.echo(f"revoked {result['revoked']} token(s) named {name}"))


@tokens.command("list")
@pass_ctx
@handle_errors
def tokens_list(ctx: Context) -> None:
    """List API tokens (never their secrets)."""
    show_table(ctx, lambda ws: ws.tokens(), ("name", "scope", "hint", "created", "revoked"),
               lambda t: [t["name"], t["scope"], t["hint"], t["created_at"], str(t["revoked"])])


# -- data ------------------------------------------------------------------------------
@main.command("import")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))  # fmt: skip
@click.option("--source", "source_name", required=True, help="Source the events belong to.")
@pass_ctx
@handle_errors
def import_(ctx: Context, files: tuple[Path, ...], source_name: str) -> None:
    """Import Segment batches, JSON lines, CSV or Parquet files (timestamps kept)."""
    from seamline.collect.files import Unreadable, detect_format, read_events

    for path in files:
        detect_format(path)  # fail before importing anything
    totals: dict[str, Any] = {"stored": 0, "duplicates": 0, "failed": 0, "reasons": {},
                              "unreadable": 0, "unreadable_examples": []}  # fmt: skip
    with _open(ctx) as ws:
        ws_sources = {s["name"] for s in ws.sources()}
        if source_name not in ws_sources:
            from seamline.errors import NotFound, did_you_mean

            raise NotFound(
                f"No source named '{source_name}'.{did_you_mean(source_name, ws_sources)} "
                f"Create it with `seamline sources add {source_name} --channel mobile`."
            )
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TimeRemainingColumn(), console=err, transient=ctx.json,
        ) as progress:  # fmt: skip
            for path in files:
                task = progress.add_task(path.name, total=path.stat().st_size)
                unreadable = Unreadable()

                def advance(n: int, task: TaskID = task) -> None:
                    progress.advance(task, n)

                for chunk in read_events(path, unreadable, advance):
                    result = ws.import_events(source_name, chunk)
                    for key in ("stored", "duplicates", "failed"):
                        totals[key] += result[key]
                    for reason, count in result.get("reasons", {}).items():
                        totals["reasons"][reason] = totals["reasons"].get(reason, 0) + count
                progress.update(task, completed=path.stat().st_size)
                totals["unreadable"] += unreadable.count
                totals["unreadable_examples"] += [f"{path.name} {w}" for w in unreadable.examples]

    def human() -> None:
        err.print(
            f"imported {totals['stored']}, duplicates {totals['duplicates']}, "
            f"failed {totals['failed']}, unreadable lines {totals['unreadable']}"
        )
        for reason, count in sorted(totals["reasons"].items()):
            err.print(f"  failed: {count} x {reason} (see `seamline failed`)")
        for example in totals["unreadable_examples"]:
            err.print(f"  unreadable: {example}")

    ctx.emit(totals, human)


@main.command()
@pass_ctx
@handle_errors
def stats(ctx: Context) -> None:
    """Counts: events, persons, failed events, dropped events, per source."""
    with _open(ctx) as ws:
        result = ws.stats()

    def human() -> None:
        out.print(
            f"events {result['events']}  persons {result['persons']}  "
            f"failed {result['failed_events']}  dropped (unknown key) "
            f"{result['dropped_unknown_key']}  dropped (suppressed) {result['dropped_suppressed']}"
            f"  rate limited (429) {result.get('rate_limited', 0)}"
        )
        table = Table("source", "channel", "unit", "events", "failed", "last received")
        for s in result["sources"]:
            table.add_row(s["name"], s["channel"], s["unit"] or "", str(s["events"]),
                          str(s["failed_events"]), s["last_received_at"] or "")  # fmt: skip
        out.print(table)

    ctx.emit(result, human)


@main.command()
@click.option("--limit", default=20, show_default=True)
@pass_ctx
@handle_errors
def failed(ctx: Context, limit: int) -> None:
    """The latest events that failed validation, with reasons."""
    with _open(ctx) as ws:
        result = ws.failed_events(limit)

    def human() -> None:
        for f in result:
            out.print(f"{f['received_at']} {f['source']} {f['reason']}: {f['message']}",
                      highlight=False)  # fmt: skip

    ctx.emit(result, human)


# -- identity --------------------------------------------------------------------------
@main.command()
@click.argument("identifier")
@click.option("--limit", default=200, show_default=True, help="Most timeline events shown.")
@pass_ctx
@handle_errors
def person(ctx: Context, identifier: str, limit: int) -> None:
    """One person (by any identifier): identities, how each linked, refusals, timeline."""
    with _open(ctx) as ws:
        result = ws.person(identifier, limit)

    def human() -> None:
        out.print(f"[bold]person {result['person_id']}[/]  ({result['event_count']} events)")
        table = Table("kind", "value", "first seen", "linked via", "message")
        for i in result["identities"]:
            table.add_row(i["kind"], i["value"], i["first_seen"], i["linked_via"] or "(seed)",
                          i["message_id"] or "")  # fmt: skip
        out.print(table)
        for m in result["merged"]:
            out.print(f"merged {m['person_id']} at {m['at']} via {m['via']} ({m['message_id']})")
        for r in result["refused"]:
            out.print(f"[yellow]refused[/] {r['kind']} {r['value']}: {r['reason']} ({r['detail']})")
        timeline = Table("time", "channel", "unit", "source", "type", "event")
        for e in result["events"]:
            timeline.add_row(e["timestamp"], e["channel"] or "", e["unit"] or "",
                             e["source"] or "", e["type"], e["event"] or "")  # fmt: skip
        out.print(timeline)

    ctx.emit(result, human)


@main.group()
def identity() -> None:
    """Identity graph: rebuild and explain."""


@identity.command("rebuild")
@engine_options
@pass_ctx
@handle_errors
def identity_rebuild(ctx: Context, engine: str, lake: str | None,
                     spark_master: str | None) -> None:  # fmt: skip
    """Recompute persons from all stored identifiers and report differences."""
    with err.status("Rebuilding the identity graph (connected components)..."), \
            _analytics(ctx, engine, lake, spark_master) as ws:  # fmt: skip
        result = ws.rebuild_identity()

    def human() -> None:
        out.print(
            f"{result['identifiers']} identifiers, {result['components']} persons, "
            f"{result['hubs']} shared identifiers; incremental map "
            + ("agrees." if result["agrees"] else
               f"differs: {result['split_in_incremental']} persons split, "
               f"{result['merged_in_incremental_only']} merged only incrementally.")
        )  # fmt: skip

    ctx.emit(result, human)


@identity.command("explain")
@click.argument("first")
@click.argument("second")
@pass_ctx
@handle_errors
def identity_explain(ctx: Context, first: str, second: str) -> None:
    """Say why two identifiers are, or are not, the same person."""
    with _open(ctx) as ws:
        result = ws.explain(first, second)

    def human() -> None:
        out.print(f"[bold]{result['verdict']}[/]")
        for side in result["identifiers"]:
            if side["person_id"] is None:
                out.print(f"  {side['identifier']}: {side['note']}")
            else:
                out.print(f"  {side['kind']} {side['value']} -> person {side['person_id']}, "
                          f"linked via {side.get('linked_via') or '(seed)'} "
                          f"in message {side.get('message_id')}")  # fmt: skip
        for r in result["refusals"]:
            out.print(f"  refused {r['kind']} {r['value']}: {r['reason']} ({r['detail']})")

    ctx.emit(result, human)


@main.command()
@click.argument("identifier")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
@handle_errors
def forget(ctx: Context, identifier: str, yes: bool) -> None:
    """Delete a person everywhere and suppress their identifiers (GDPR)."""
    if not yes and not ctx.json and sys.stdin.isatty():
        click.confirm(f"Delete every event and identifier of the person '{identifier}'?",
                      abort=True)  # fmt: skip
    with _open(ctx) as ws:
        result = ws.forget(identifier)
    ctx.emit(result, lambda: err.print(
        f"deleted person {result['person_id']}: {result['deleted']['events']} events, "
        f"{len(result['suppressed'])} identifiers now suppressed"
    ))  # fmt: skip


# -- analytics ---------------------------------------------------------------------------
@main.command()
@pass_ctx
@handle_errors
def compact(ctx: Context) -> None:
    """Rewrite the workspace file so deleted data (forget) leaves the disk.

    Needs the file to itself: stop the server first.
    """
    from seamline.store.compact import compact as run

    info = running_server(ctx.data)
    if info is not None:
        raise SeamlineError(
            f"A server (pid {info.get('pid')}) owns {ctx.data}; compaction rewrites the file "
            "and needs it to itself. Stop the server, run `seamline compact`, start it again.",
            code="server_running", status=409,
        )  # fmt: skip
    with err.status("Compacting..."):
        result = run(ctx.data)
    ctx.emit(result, lambda: err.print(
        f"Compacted {result['file']}: {result['bytes_before']:,} -> {result['bytes_after']:,} "
        f"bytes, {result['rows']:,} rows in {result['tables']} tables, {result['seconds']} s"
    ))  # fmt: skip


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SeamlineError(f"--{name} {value!r} is not a date; write e.g. 2026-11-01.") from None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


@main.command()
@click.argument("steps", nargs=-1, required=True)
@click.option("--within", default="7d", show_default=True, help="Window from step 1 (e.g. 2h).")
@click.option("--by", default=None, help="Breakdown field: channel, app_version, properties.X...")
@click.option("--by-step", type=int, default=None,
              help="Breakdown value at step N (default: first touch).")  # fmt: skip
@click.option("--strict", is_flag=True, help="Steps must follow each other with nothing between.")
@click.option("--exclude", multiple=True, help="Drop attempts with this event between the steps.")
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date (UTC).")
@engine_options
@pass_ctx
@handle_errors
def funnel(ctx: Context, steps: tuple[str, ...], within: str, by: str | None, by_step: int | None,
           strict: bool, exclude: tuple[str, ...], start: str | None, end: str | None,
           engine: str, lake: str | None, spark_master: str | None) -> None:  # fmt: skip
    """Ordered funnel: people per step.

    STEP is an event, e.g. "Order Completed[properties.plan=pro]".
    """
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.funnel(list(steps), within, by, by_step=by_step, strict=strict,
                           exclude=list(exclude), start=_when(start, "from"),
                           end=_when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def table_of(rows: list[dict[str, Any]], title: str) -> Table:
        table = Table("step", "people", "conversion", "95% CI", "from previous", "in progress",
                      "median time", "p90 time", title=title)  # fmt: skip
        for r in rows:
            ci = "" if r["ci_low"] is None else f"{r['ci_low']:.0%}-{r['ci_high']:.0%}"
            table.add_row(r["step"], str(r["people"]), f"{r['conversion']:.1%}", ci,
                          f"{r['step_conversion']:.1%}", str(r["in_progress"]),
                          _seconds(r["median_seconds"]), _seconds(r["p90_seconds"]))  # fmt: skip
        return table

    def human() -> None:
        out.print(table_of(data["steps"], "all people"))
        for value, rows in data.get("breakdown", {}).items():
            out.print(table_of(rows, f"{by} = {value}"))

    ctx.emit(data, human)


@main.command()
@click.option("--from-event", default=None, help="Start each journey at this event.")
@click.option("--min-people", default=1, show_default=True, type=int)
@click.option("--top", default=None, type=int, help="Keep the N busiest edges.")
@click.option("--lane", type=click.Choice(["channel", "unit"]), default="channel",
              show_default=True)  # fmt: skip
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date (UTC).")
@engine_options
@pass_ctx
@handle_errors
def journeys(ctx: Context, from_event: str | None, min_people: int, top: int | None, lane: str,
             start: str | None, end: str | None, engine: str, lake: str | None,
             spark_master: str | None) -> None:  # fmt: skip
    """Journey map: hand-offs between touchpoints across channels, with times."""
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.journeys(from_event, min_people, top, lane, start=_when(start, "from"),
                             end=_when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        table = Table("from", lane, "to", lane, "people", "transitions", "median", "p90")
        for e in data["edges"]:
            table.add_row(str(e["from"]), str(e[f"from_{lane}"]), str(e["to"]),
                          str(e[f"to_{lane}"]), str(e["people"]), str(e["transitions"]),
                          _seconds(e["median_seconds"]), _seconds(e["p90_seconds"]))  # fmt: skip
        out.print(table)

    ctx.emit(data, human)


@main.command()
@click.option("--within", default="2h", show_default=True, help="Hand-off window T.")
@click.option("--min-people", default=30, show_default=True, type=int, help="Minimum support.")
@click.option("--funnel", "funnel_steps", multiple=True,
              help="Funnel steps (repeat) to test for broken segments.")  # fmt: skip
@click.option("--by", multiple=True, help="Breakdown fields for broken segments (repeat).")
@click.option("--outcome-within", default="7d", show_default=True)
@click.option("--all", "include_all", is_flag=True,
              help="Also list candidates that are not significant.")  # fmt: skip
@click.option("--people", is_flag=True, help="List example people behind each seam.")
@engine_options
@pass_ctx
@handle_errors
def seams(ctx: Context, within: str, min_people: int, funnel_steps: tuple[str, ...],
          by: tuple[str, ...], outcome_within: str, include_all: bool, people: bool,
          engine: str, lake: str | None, spark_master: str | None) -> None:  # fmt: skip
    """Ranked failing hand-offs between channels and units, with honest statistics."""
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.seams(within, min_people, funnel=list(funnel_steps) or None,
                          by=list(by) or None, outcome_within=outcome_within,
                          include_all=include_all)  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        if not data["seams"]:
            out.print(f"No significant seams among {data['candidates']} candidates "
                      f"(min support {data['min_people']} people).")  # fmt: skip
        for rank, s in enumerate(data["seams"], start=1):
            lift = "n/a" if s["lift"] is None else f"{s['lift']:.1f}x"
            out.print(f"[bold]{rank}. {escape('[' + s['kind'] + ']')}[/] {s['description']}",
                      highlight=False)  # fmt: skip
            out.print(f"   {s['people']} people, rate {s['rate']:.1%} "
                      f"(95% CI {s['ci_low']:.1%}-{s['ci_high']:.1%}), baseline "
                      f"{s['baseline_rate']:.1%}, lift {lift}, q {s['q_value']:.2g}",
                      highlight=False)  # fmt: skip
            if people and s["people_examples"]:
                out.print("   people: " + ", ".join(s["people_examples"]), highlight=False)
        for note in data["notes"]:
            out.print(f"[dim]{note}[/]")

    ctx.emit(data, human)


@main.command()
@click.argument("event")
@click.option("--steps", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Touchpoints after (or before) the event.")  # fmt: skip
@click.option("--before", is_flag=True, help="Paths that lead to the event instead.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--collapse-repeats", is_flag=True, help="A run of one event counts once.")
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date (UTC).")
@engine_options
@pass_ctx
@handle_errors
def paths(ctx: Context, event: str, steps: int, before: bool, top: int, collapse_repeats: bool,
          start: str | None, end: str | None, engine: str, lake: str | None,
          spark_master: str | None) -> None:  # fmt: skip
    """Top paths after (or before) each person's first EVENT."""
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.paths(event, steps, "before" if before else "after", top, collapse_repeats,
                          start=_when(start, "from"), end=_when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        table = Table("path", "people", "share",
                      title=f"{data['people']} people with {event}")  # fmt: skip
        for p in data["paths"]:
            table.add_row(" → ".join(map(str, p["path"])), str(p["people"]), f"{p['share']:.1%}")
        out.print(table)

    ctx.emit(data, human)


@main.command()
@click.option("--start-event", default=None, help="Cohort by each person's first (default: any).")
@click.option("--return-event", default=None, help="What counts as a return (default: any).")
@click.option("--period", type=click.Choice(["day", "week"]), default="week", show_default=True)
@click.option("--periods", default=8, show_default=True, type=click.IntRange(1, 366))
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date (UTC).")
@engine_options
@pass_ctx
@handle_errors
def retention(ctx: Context, start_event: str | None, return_event: str | None, period: str,
              periods: int, start: str | None, end: str | None, engine: str, lake: str | None,
              spark_master: str | None) -> None:  # fmt: skip
    """Retention cohorts: who comes back in each period after their first start event."""
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.retention(start_event, return_event, period, periods,
                              start=_when(start, "from"), end=_when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        table = Table("cohort", "people", *(f"{period} {k}" for k in range(periods)))
        for c in data["cohorts"]:
            shown = c["periods_observed"]  # offsets not begun yet stay blank
            rates = [f"{r:.0%}" if k < shown else "" for k, r in enumerate(c["rates"])]
            table.add_row(c["cohort"], str(c["people"]), *rates)
        out.print(table)

    ctx.emit(data, human)


@main.command()
@click.option("--period", type=click.Choice(["day", "week"]), default="week", show_default=True)
@click.option("--outcome", multiple=True, help="Outcome event (repeat; default: declared).")
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date (UTC).")
@engine_options
@pass_ctx
@handle_errors
def outcomes(ctx: Context, period: str, outcome: tuple[str, ...], start: str | None,
             end: str | None, engine: str, lake: str | None,
             spark_master: str | None) -> None:  # fmt: skip
    """Outcome rates, time to outcome, costly contacts per person and containment."""
    with _analytics(ctx, engine, lake, spark_master) as ws:
        result = ws.outcomes(period, list(outcome) or None, start=_when(start, "from"),
                             end=_when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        table = Table(period, "people", "outcome", "rate", "median time", "p90 time",
                      "contacts/person", "containment",
                      title="outcomes: " + ", ".join(data["outcomes"]))  # fmt: skip
        for p in data["periods"]:
            table.add_row(p["period"], str(p["people"]), str(p["converted"]),
                          f"{p['outcome_rate']:.1%}", _seconds(p["median_seconds_to_outcome"]),
                          _seconds(p["p90_seconds_to_outcome"]),
                          f"{p['contacts_per_person']:.2f}", f"{p['containment']:.1%}")  # fmt: skip
        out.print(table)

    ctx.emit(data, human)


# -- lake --------------------------------------------------------------------------------
@main.group()
def lake() -> None:
    """The Parquet events lake that Spark, DuckDB, ClickHouse or Polars read."""


@lake.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--incremental", is_flag=True,
              help="Only dates with events received since the last export.")  # fmt: skip
@pass_ctx
@handle_errors
def lake_export(ctx: Context, directory: Path, incremental: bool) -> None:
    """Write events (by event date), identities and the person map as Parquet."""
    with err.status(f"Exporting to {directory}..."), _open(ctx) as ws:
        result = ws.lake_export(str(directory.resolve()), incremental)
    ctx.emit(result, lambda: err.print(
        f"{result['events_written']} events in {len(result['dates'])} dates written to "
        f"{directory} (collector {result['collector']})"
    ))  # fmt: skip


# -- moments (commands in their own module) -------------------------------------------------
from seamline.cli_moments import moments as _moments  # noqa: E402 - needs the helpers above

main.add_command(_moments)

# -- metrics: which metrics matter (commands in their own module) ----------------------------
from seamline.cli_metrics import metrics as _metrics  # noqa: E402 - needs the helpers above

main.add_command(_metrics)

# -- accounts: dashboard users and the audit log (commands in their own module) -------------
from seamline.cli_accounts import accounts as _accounts  # noqa: E402 - needs the helpers above

main.add_command(_accounts)
