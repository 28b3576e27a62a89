"""Build the event queries of analyses as SQLGlot trees, rendered per engine dialect.

Values are literals that SQLGlot quotes; field names are checked against
:data:`~seamline.analytics.definitions.DIMENSIONS` before they reach a tree. The
kernels need each person's events sorted by time, ties broken by step order.
"""

from __future__ import annotations

from typing import Any

import sqlglot
from sqlglot import exp

from seamline.analytics.definitions import DateRange, FunnelDefinition, Step, check_field

EVENTS = "events_resolved"
PERSON = "resolved_person_id"


def field_expression(name: str) -> exp.Expr:
    """The expression for a dimension or a JSON path such as ``properties.plan``."""
    check_field(name)
    if name == "source":
        return sqlglot.parse_one(
            "(SELECT s.name FROM sources AS s WHERE s.source_id = e.source_id)", read="duckdb"
        )
    head, _, rest = name.partition(".")
    if not rest:
        return exp.column(name, table="e")
    # check_field allowed only [A-Za-z0-9_$-] path parts, so the path text is safe here
    return sqlglot.parse_one(f"e.{head} ->> '$.{rest}'", read="duckdb")


def _equals(name: str, value: Any) -> exp.Expr:
    return exp.EQ(this=field_expression(name), expression=exp.Literal.string(str(value)))


def step_condition(step: Step) -> exp.Expr:
    condition: exp.Expr = exp.EQ(
        this=exp.column("event", table="e"), expression=exp.Literal.string(step.event)
    )
    for name, value in step.where.items():
        condition = exp.and_(condition, _equals(name, value))
    return condition


def _date_filters(dates: DateRange) -> list[exp.Expr]:
    filters: list[exp.Expr] = []
    if dates.start is not None:
        filters.append(exp.GTE(this=exp.column("timestamp", table="e"),
                               expression=exp.cast(exp.Literal.string(dates.start.isoformat()),
                                                   "TIMESTAMP")))  # fmt: skip
    if dates.end is not None:
        filters.append(exp.LT(this=exp.column("timestamp", table="e"),
                              expression=exp.cast(exp.Literal.string(dates.end.isoformat()),
                                                  "TIMESTAMP")))  # fmt: skip
    return filters


def funnel_query(definition: FunnelDefinition, dialect: str = "duckdb") -> str:
    """One row per relevant event: person, time, a flag per step and exclusion, breakdown."""
    step_flags = [step_condition(step) for step in definition.steps]
    exclusion_flags = [
        exp.EQ(this=exp.column("event", table="e"), expression=exp.Literal.string(x.event))
        for x in definition.exclusions
    ]
    columns: list[exp.Expr] = [
        exp.column(PERSON, table="e").as_("person"),
        exp.column("timestamp", table="e").as_("ts"),
    ]
    columns += [exp.Coalesce(this=flag, expressions=[exp.false()]).as_(f"s{i}")
                for i, flag in enumerate(step_flags)]  # fmt: skip
    columns += [flag.as_(f"x{i}") for i, flag in enumerate(exclusion_flags)]
    if definition.by is not None:
        columns.append(exp.cast(field_expression(definition.by), "VARCHAR").as_("breakdown"))
    first_step = exp.Case()
    for i, flag in enumerate(step_flags):
        first_step = first_step.when(flag, exp.Literal.number(i))
    columns.append(first_step.else_(exp.Literal.number(len(step_flags))).as_("tie"))
    where: list[exp.Expr] = [exp.column(PERSON, table="e").is_(exp.null()).not_()]
    if not definition.strict:  # strict funnels need every event, to see what interrupts
        where.append(exp.or_(*step_flags, *exclusion_flags))
    where += _date_filters(definition.dates)
    where += [_equals(name, value) for name, value in definition.segment.items()]
    query = (
        sqlglot.select(*columns)
        .from_(exp.alias_(exp.to_table(EVENTS), "e"))
        .where(exp.and_(*where))
        .order_by("person", "ts", "tie", exp.column("message_id", table="e"))
    )
    return query.sql(dialect=dialect)


def sequence_query(dates: DateRange, include_identify: bool, node_field: str,
                   dialect: str = "duckdb") -> str:  # fmt: skip
    """Every touchpoint of every person, in time order (journeys, paths)."""
    label = exp.Coalesce(this=exp.column("event", table="e"),
                         expressions=[exp.column("type", table="e")])  # fmt: skip
    where: list[exp.Expr] = [exp.column(PERSON, table="e").is_(exp.null()).not_()]
    if not include_identify:
        where.append(exp.column("type", table="e").isin("track", "page", "screen"))
    where += _date_filters(dates)
    query = (
        sqlglot.select(
            exp.column(PERSON, table="e").as_("person"),
            exp.column("timestamp", table="e").as_("ts"),
            label.as_("event"),
            exp.cast(field_expression(node_field), "VARCHAR").as_("lane"),
        )
        .from_(exp.alias_(exp.to_table(EVENTS), "e"))
        .where(exp.and_(*where))
        .order_by("person", "ts", exp.column("message_id", table="e"))
    )
    return query.sql(dialect=dialect)


# -- paths, retention, outcomes ------------------------------------------------------------
#: Calls that are touchpoints (someone did something); identify, group and alias are not.
TOUCHPOINTS = ("track", "page", "screen")


def _touchpoint_rows(dates: DateRange) -> list[exp.Expr]:
    return [
        exp.column(PERSON, table="e").is_(exp.null()).not_(),
        exp.column("type", table="e").isin(*TOUCHPOINTS),
        *_date_filters(dates),
    ]


def _event_is(names: tuple[str, ...] | str | None) -> exp.Expr:
    """``e.event IN (...)``, never null; ``None`` means any touchpoint (TRUE)."""
    if names is None:
        return exp.true()
    listed = (names,) if isinstance(names, str) else names
    if not listed:
        return exp.false()
    return exp.Coalesce(this=exp.column("event", table="e").isin(*listed),
                        expressions=[exp.false()])  # fmt: skip


def _sorted_events(columns: list[exp.Expr], where: list[exp.Expr],
                   dialect: str) -> str:  # fmt: skip
    query = (
        sqlglot.select(
            exp.column(PERSON, table="e").as_("person"),
            exp.column("timestamp", table="e").as_("ts"),
            *columns,
        )
        .from_(exp.alias_(exp.to_table(EVENTS), "e"))
        .where(exp.and_(*where))
        .order_by("person", "ts", exp.column("message_id", table="e"))
    )
    return query.sql(dialect=dialect)


def retention_query(start_event: str | None, return_event: str | None, dates: DateRange,
                    dialect: str = "duckdb") -> str:  # fmt: skip
    """Touchpoints flagged as start and/or return events, per person in time order."""
    is_start, is_return = _event_is(start_event), _event_is(return_event)
    where = _touchpoint_rows(dates)
    if start_event is not None and return_event is not None:
        where.append(exp.or_(is_start, is_return))
    return _sorted_events([is_start.as_("is_start"), is_return.as_("is_return")], where, dialect)


def outcome_query(outcomes: tuple[str, ...], costly_events: tuple[str, ...],
                  costly_channels: tuple[str, ...], dates: DateRange,
                  dialect: str = "duckdb") -> str:  # fmt: skip
    """Every touchpoint, flagged as an outcome and/or a costly contact (an event named in
    ``costly_events`` or any event of one of the ``costly_channels``)."""
    is_costly = _event_is(costly_events)
    if costly_channels:
        in_channel = exp.Coalesce(this=exp.column("channel", table="e").isin(*costly_channels),
                                  expressions=[exp.false()])  # fmt: skip
        is_costly = in_channel if not costly_events else exp.or_(is_costly, in_channel)
    columns = [_event_is(outcomes).as_("is_outcome"), is_costly.as_("is_costly")]
    return _sorted_events(columns, _touchpoint_rows(dates), dialect)
