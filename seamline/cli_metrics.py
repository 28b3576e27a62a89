"""``seamline metrics score``: which metrics matter (registered by ``cli.py``).

Like every command, it goes through the running server when one owns the workspace.
"""

from __future__ import annotations

import click
from rich.table import Table

from seamline import cli

pass_ctx = click.make_pass_decorator(cli.Context)

_VERDICT_STYLE = {"predictive": "bold green", "weak": "yellow", "vanity": "red",
                  "insufficient_data": "dim"}  # fmt: skip


def _figure(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@click.group()
def metrics() -> None:
    """Metrics: which engagement metrics predict the outcomes you declared."""


@metrics.command("score")
@click.option("--outcome", default=None, help="Outcome event, retention:30 / retention:90, or "
              "no_costly_contact (default: the declared outcome events).")
@click.option("--metric", "metric", multiple=True, help="Extra metric (repeat): event:NAME, "
              "property:properties.NAME[:sum|:mean].")
@click.option("--observe", default="14d", show_default=True, help="Observation window.")
@click.option("--predict", default="30d", show_default=True, help="Outcome window after it.")
@click.option("--holdout", default=0.5, show_default=True, type=float,
              help="Share of persons held out for the scores (0.1-0.9).")
@click.option("--no-builtins", is_flag=True, help="Score only the metrics named by --metric.")
@click.option("--from", "start", default=None, help="Only events from this date (UTC).")
@click.option("--to", "end", default=None, help="Only events before this date; also as-of.")
@pass_ctx
@cli.handle_errors
def metrics_score(ctx: cli.Context, outcome: str | None, metric: tuple[str, ...], observe: str,
                  predict: str, holdout: float, no_builtins: bool, start: str | None,
                  end: str | None) -> None:  # fmt: skip
    """Rank candidate metrics by how well they predict the outcome on held-out persons."""
    with cli._open(ctx) as ws:
        result = ws.metrics_score(outcome, list(metric) or None, observe, predict,
                                  holdout=holdout, builtins=not no_builtins,
                                  start=cli._when(start, "from"),
                                  end=cli._when(end, "to"))  # fmt: skip
    data = result.to_dict()

    def human() -> None:
        title = (f"outcome {data['outcome']['label']}: {data['converted']} of "
                 f"{data['eligible']} eligible persons; {data['held_out']} held out")  # fmt: skip
        table = Table("#", "metric", "verdict", "AUC (95% CI)", "direction", "Spearman",
                      "sensitivity", "stability", "inflatable", title=title)  # fmt: skip
        for m in data["metrics"]:
            interval = (f"{_figure(m['auc'])} ({_figure(m['ci_low'])}-{_figure(m['ci_high'])})"
                        if m["auc"] is not None else "-")  # fmt: skip
            style = _VERDICT_STYLE.get(m["verdict"], "")
            table.add_row(str(m["rank"]), m["metric"], f"[{style}]{m['verdict']}[/]", interval,
                          m["direction"], _figure(m["spearman"]), _figure(m["sensitivity"]),
                          _figure(m["stability"]), f"{m['inflatability']:.0%}")  # fmt: skip
        cli.out.print(table)
        for note in data["notes"]:
            cli.err.print(note, highlight=False)

    ctx.emit(data, human)
