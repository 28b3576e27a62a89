"""What "which metrics matter" scores: candidate metrics, the outcome, the windows.

Parsed and validated here (engine-free); :func:`metrics_query` is the one event query,
a SQLGlot tree rendered per dialect, and :mod:`seamline.analytics.metrics` the kernel.

Metric names (``--metric``):

- built-ins: ``sessions``, ``screens_per_session``, ``active_days``, ``app_opens``, ``events``;
- ``event:NAME``: how many times the person did the event NAME;
- ``property:properties.x`` (sum of the numeric property over the person's events) or
  ``property:properties.x:mean`` (its mean over the events that carry a number).

Outcomes (``--outcome``): one event name; ``retention:D`` (any touchpoint in days
``D .. D + predict`` after the person's first touchpoint); ``no_costly_contact``; default:
the workspace's declared outcome events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import sqlglot
from sqlglot import exp

from seamline.analytics.definitions import DateRange, check_field
from seamline.analytics.durations import format_duration, parse_duration
from seamline.analytics.query import EVENTS, PERSON, _date_filters, _event_is
from seamline.errors import BadRequest, did_you_mean

#: Built-in candidate metrics, in the order they are listed, with their labels.
BUILT_INS: dict[str, str] = {
    "sessions": "Sessions per person",
    "screens_per_session": "Screens per session",
    "active_days": "Active days",
    "app_opens": "App opens",
    "events": "Events per person",
}
#: App opens: Segment's mobile lifecycle event, and the name many apps track themselves.
APP_OPENED = ("Application Opened", "App Opened")
SESSION_GAP = timedelta(minutes=30)
MAX_METRICS = 30
_EXAMPLES = "e.g. sessions, event:Report Exported or property:properties.amount"


@dataclass(frozen=True)
class MetricSpec:
    """One candidate metric. ``key`` is the name as written (``event:Order Viewed``)."""

    key: str
    kind: Literal["builtin", "event", "property"]
    target: str = ""  # event name, or property field
    aggregate: Literal["count", "sum", "mean"] = "count"

    @property
    def label(self) -> str:
        if self.kind == "builtin":
            return BUILT_INS[self.key]
        if self.kind == "event":
            return f"{self.target} per person"
        return f"{self.target} ({self.aggregate} per person)"


def parse_metric(text: str) -> MetricSpec:
    """``"sessions"``, ``"event:NAME"``, ``"property:properties.x[:sum|:mean]"``."""
    key = str(text).strip()
    if key in BUILT_INS:
        return MetricSpec(key, "builtin")
    kind, sep, rest = key.partition(":")
    rest = rest.strip()
    if sep and kind == "event":
        if not rest:
            raise BadRequest(f"metric {key!r} needs an event name after 'event:'.",
                             code="invalid_metric")  # fmt: skip
        return MetricSpec(f"event:{rest}", "event", rest)
    if sep and kind == "property":
        field, _, aggregate = rest.partition(":")
        aggregate = aggregate or "sum"
        if aggregate not in ("sum", "mean"):
            raise BadRequest(f"metric {key!r}: the aggregate must be 'sum' or 'mean', "
                             f"not {aggregate!r}.", code="invalid_metric")  # fmt: skip
        if not field.startswith(("properties.", "context.", "traits.")):
            raise BadRequest(f"metric {key!r} names a property as properties.NAME "
                             "(or context.NAME), e.g. property:properties.amount.",
                             code="invalid_metric")  # fmt: skip
        try:
            check_field(field)
        except BadRequest as exc:
            raise BadRequest(f"metric {key!r}: {exc.message}", code="invalid_metric") from None
        return MetricSpec(f"property:{field}:{aggregate}", "property", field, aggregate)  # type: ignore[arg-type]
    raise BadRequest(
        f"Unknown metric {key!r}.{did_you_mean(key, tuple(BUILT_INS))} Use a built-in "
        f"({', '.join(BUILT_INS)}), event:NAME or property:properties.NAME[:sum|:mean].",
        code="invalid_metric",
    )


@dataclass(frozen=True)
class OutcomeSpec:
    """The outcome measured in the later window."""

    kind: Literal["events", "retention", "no_costly_contact"]
    events: tuple[str, ...] = ()
    days: int = 0  # retention: the window starts this many days after the anchor

    @property
    def label(self) -> str:
        if self.kind == "retention":
            return f"retention:{self.days}"
        if self.kind == "no_costly_contact":
            return "no_costly_contact"
        return ", ".join(self.events)


def parse_outcome(text: str | None, declared: tuple[str, ...]) -> OutcomeSpec:
    """An event name, ``retention:D``, ``no_costly_contact``, or (None) the declared events."""
    value = (text or "").strip()
    if not value:
        if not declared:
            raise BadRequest(
                "outcome: no outcome events are declared; pass an outcome event, retention:30 "
                "or no_costly_contact, or declare them in SEAMLINE_OUTCOME_EVENTS.",
                code="invalid_outcome",
            )
        return OutcomeSpec("events", declared)
    if value == "no_costly_contact":
        return OutcomeSpec("no_costly_contact")
    head, sep, rest = value.partition(":")
    if sep and head == "retention":
        days = rest.strip().lower().removesuffix("d")
        if not days.isdigit() or not 1 <= int(days) <= 730:
            raise BadRequest(f"outcome {value!r}: write retention:DAYS with DAYS from 1 to 730, "
                             "e.g. retention:30.", code="invalid_outcome")  # fmt: skip
        return OutcomeSpec("retention", days=int(days))
    return OutcomeSpec("events", (value,))


@dataclass(frozen=True)
class MetricsDefinition:
    """Score ``metrics`` for ``outcome``: each person is measured over ``observe`` from their
    first touchpoint; the outcome is looked for in the ``predict`` window after it (from day
    ``D`` for retention:D). ``holdout`` is the share of persons held out for the scores."""

    metrics: tuple[MetricSpec, ...]
    outcome: OutcomeSpec
    observe: timedelta = timedelta(days=14)
    predict: timedelta = timedelta(days=30)
    holdout: float = 0.5
    repeat_within: timedelta = timedelta(seconds=10)
    costly_events: tuple[str, ...] = ()
    costly_channels: tuple[str, ...] = ()
    dates: DateRange = field(default_factory=DateRange)

    def __post_init__(self) -> None:
        if not self.metrics:
            raise BadRequest("metric: name at least one metric.", code="invalid_metric")
        if len(self.metrics) > MAX_METRICS:
            raise BadRequest(f"metric: at most {MAX_METRICS} metrics at once.",
                             code="invalid_metric")  # fmt: skip
        if not timedelta(hours=1) <= self.observe <= timedelta(days=365):
            raise BadRequest("observe must be between 1h and 365d, e.g. 14d.",
                             code="invalid_duration")  # fmt: skip
        if not timedelta(hours=1) <= self.predict <= timedelta(days=730):
            raise BadRequest("predict must be between 1h and 730d, e.g. 30d.",
                             code="invalid_duration")  # fmt: skip
        if not 0.1 <= self.holdout <= 0.9:
            raise BadRequest("holdout must be between 0.1 and 0.9 (the share of persons held "
                             "out), e.g. 0.5.", code="invalid_holdout")  # fmt: skip
        if self.outcome.kind == "retention" and self.outcome_start < self.observe:
            raise BadRequest(
                f"outcome retention:{self.outcome.days} would start inside the "
                f"{format_duration(self.observe)} observation window; use retention:"
                f"{-(-self.observe // timedelta(days=1))} or more, or a shorter observe.",
                code="invalid_outcome",
            )

    @property
    def outcome_start(self) -> timedelta:
        """Start of the outcome window, from the person's first touchpoint."""
        if self.outcome.kind == "retention":
            return timedelta(days=self.outcome.days)
        return self.observe

    @property
    def outcome_end(self) -> timedelta:
        return self.outcome_start + self.predict

    @classmethod
    def build(cls, declared: tuple[str, ...], costly_events: tuple[str, ...],
              costly_channels: tuple[str, ...], outcome: str | None = None,
              metrics: list[str] | tuple[str, ...] | None = None, builtins: bool = True,
              observe: str | timedelta = "14d", predict: str | timedelta = "30d",
              holdout: float = 0.5, dates: DateRange | None = None
              ) -> MetricsDefinition:  # fmt: skip
        """Built-ins (unless ``builtins=False``) plus the named ``metrics``, repeats dropped."""
        names = [*(BUILT_INS if builtins else ()), *(metrics or ())]
        parsed = tuple({spec.key: spec for spec in map(parse_metric, names)}.values())
        return cls(parsed, parse_outcome(outcome, declared), parse_duration(observe, "observe"),
                   parse_duration(predict, "predict"), float(holdout),
                   costly_events=costly_events, costly_channels=costly_channels,
                   dates=dates or DateRange())  # fmt: skip


def metric_column(spec: MetricSpec) -> exp.Expr | None:
    """The per-event column a named metric needs (a flag, or the number); built-ins none."""
    if spec.kind == "event":
        return _event_is(spec.target)
    if spec.kind == "property":
        from seamline.analytics.query import field_expression

        return exp.TryCast(this=field_expression(spec.target), to=exp.DataType.build("DOUBLE"))
    return None


def metrics_query(definition: MetricsDefinition, dialect: str = "duckdb") -> str:
    """Every touchpoint per person in time order, with the flags the metrics and the
    outcome need: ``event`` (label), ``is_screen``, ``is_open``, ``is_outcome``,
    ``is_costly`` and one ``m<i>`` column per named metric."""
    e_type = exp.column("type", table="e")
    label = exp.Coalesce(this=exp.column("event", table="e"), expressions=[e_type])
    is_costly = _event_is(definition.costly_events)
    if definition.costly_channels:
        in_channel = exp.Coalesce(
            this=exp.column("channel", table="e").isin(*definition.costly_channels),
            expressions=[exp.false()],
        )
        is_costly = in_channel if not definition.costly_events else exp.or_(is_costly, in_channel)
    columns: list[exp.Expr] = [
        exp.column(PERSON, table="e").as_("person"),
        exp.column("timestamp", table="e").as_("ts"),
        label.as_("event"),
        e_type.isin("page", "screen").as_("is_screen"),
        _event_is(APP_OPENED).as_("is_open"),
        _event_is(definition.outcome.events).as_("is_outcome"),
        is_costly.as_("is_costly"),
    ]
    for index, spec in enumerate(definition.metrics):
        column = metric_column(spec)
        if column is not None:
            columns.append(column.as_(f"m{index}"))
    where: list[exp.Expr] = [
        exp.column(PERSON, table="e").is_(exp.null()).not_(),
        e_type.isin("track", "page", "screen"),
        *_date_filters(definition.dates),
    ]
    query = (
        sqlglot.select(*columns)
        .from_(exp.alias_(exp.to_table(EVENTS), "e"))
        .where(exp.and_(*where))
        .order_by("person", "ts", exp.column("message_id", table="e"))
    )
    return query.sql(dialect=dialect)
