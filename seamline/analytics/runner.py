"""The analyses over any engine: definitions built once, queries rendered per dialect.

:class:`Analyses` is what :class:`seamline.app.Workspace` (DuckDB) and
:class:`seamline.lake_workspace.LakeWorkspace` (Spark over a Parquet lake) both call,
so a funnel means the same thing on both: the same definition, the same SQLGlot tree
rendered in the engine's dialect, the same NumPy kernel over the rows sorted by person.
Each kernel is a :class:`~seamline.analytics.kernels.KernelPlan` (partial, merge, finish):
DuckDB runs it over all the rows at once, Spark per partition of persons where the rows are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, cast

from seamline.analytics import (
    DateRange,
    Exclusion,
    FunnelDefinition,
    FunnelResult,
    JourneyDefinition,
    JourneyResult,
)
from seamline.analytics.definitions import (
    COSTLY_CHANNELS,
    OutcomeDefinition,
    PathDefinition,
    RetentionDefinition,
    check_period,
)
from seamline.analytics.durations import parse_duration
from seamline.analytics.funnel import finish_funnel, funnel_flags, funnel_partial, merge_funnel
from seamline.analytics.journeys import finish_journeys, journey_partial, merge_journeys
from seamline.analytics.kernels import KernelPlan
from seamline.analytics.outcomes import finish_outcomes, merge_outcomes, outcome_partial
from seamline.analytics.paths import finish_paths, merge_paths, path_partial
from seamline.analytics.query import (
    funnel_query,
    outcome_query,
    retention_query,
    sequence_query,
)
from seamline.analytics.result import OutcomeResult, PathResult, Result, RetentionResult
from seamline.analytics.retention import finish_retention, merge_retention, retention_partial
from seamline.analytics.seams import (
    SeamsDefinition,
    SeamsResult,
    finish_seams,
    merge_seams,
    seams_partial,
)
from seamline.analytics.snapshot import (
    COLUMNS,
    Snapshot,
    SnapshotHolder,
    funnel_table,
    outcome_table,
    retention_table,
    sequence_table,
)
from seamline.errors import BadRequest
from seamline.events.timestamps import utcnow
from seamline.settings import Settings
from seamline.store.engine import Engine


def journey_plan(definition: JourneyDefinition) -> KernelPlan:
    """The journey map's kernel: over sequence rows coded by event and lane."""
    return KernelPlan(functools.partial(journey_partial, definition=definition), merge_journeys,
                      functools.partial(finish_journeys, definition=definition),
                      ("event", "lane"))  # fmt: skip


class Analyses:
    """Funnels, journeys, seams, paths, retention and outcomes on one engine."""

    def __init__(self, engine: Engine, settings: Settings,
                 snapshots: SnapshotHolder | None = None):  # fmt: skip
        self.engine = engine
        self.settings = settings
        # the DuckDB workspace answers what it can from its sorted sequence snapshot (same
        # rows, same order as the queries below); other engines always run the queries
        self.snapshots = snapshots

    def _rows(self, sql: str) -> Any:
        return self.engine.query_arrow(sql)

    def _snapshot(self, fields: list[str] | tuple[str, ...] = ()) -> Snapshot | None:
        """The snapshot, when it holds every column in ``fields`` (checked first: a query
        it cannot answer must not pay for building it)."""
        if self.snapshots is None or not all(name in COLUMNS for name in fields):
            return None
        return self.snapshots.get()

    def funnel(
        self,
        steps: list[str],
        within: str = "7d",
        by: str | None = None,
        *,
        by_step: int | None = None,
        strict: bool = False,
        step_windows: list[str | None] | None = None,
        exclude: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        where: dict[str, Any] | None = None,
    ) -> FunnelResult:
        """People per ordered step (see :meth:`seamline.app.Workspace.funnel`)."""
        definition = FunnelDefinition.build(
            steps, within, by,
            by_step=None if by_step is None else by_step - 1,
            strict=strict,
            step_windows=step_windows or (),
            exclusions=tuple(Exclusion(event) for event in exclude or ()),
            dates=DateRange(start, end),
            segment=dict(where or {}),
        )  # fmt: skip
        fields = [name for step in definition.steps for name in step.where]
        fields += [*definition.segment, *([definition.by] if definition.by is not None else [])]
        snap = self._snapshot(fields)
        table = funnel_table(snap, definition) if snap is not None else None
        as_of = end or utcnow()
        plan = KernelPlan(
            functools.partial(funnel_partial, definition=definition, as_of=as_of),
            functools.partial(merge_funnel, definition=definition),
            functools.partial(finish_funnel, definition=definition, as_of=as_of),
            ("breakdown",) if definition.by is not None else (), funnel_flags(definition),
        )  # fmt: skip
        return cast(FunnelResult, self._run(
            plan, table, lambda: funnel_query(definition, dialect=self.engine.dialect)))

    def journeys(
        self,
        from_event: str | None = None,
        min_people: int = 1,
        top: int | None = None,
        lane: str = "channel",
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> JourneyResult:
        """The journey map: edges between touchpoints with people, transitions and times."""
        if lane not in ("channel", "unit"):
            raise BadRequest(f"lane must be 'channel' or 'unit', not '{lane}'.",
                             code="invalid_lane")  # fmt: skip
        definition = JourneyDefinition(from_event, min_people, top, DateRange(start, end),
                                       by=lane)  # type: ignore[arg-type]  # fmt: skip
        return cast(JourneyResult, self._sequences(journey_plan(definition), definition.dates,
                                                   definition.include_identify, lane))

    def declared(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(outcome events, costly events, costly channels) declared in the settings."""

        def listed(text: str) -> tuple[str, ...]:
            return tuple(part.strip() for part in text.split(",") if part.strip())

        outcomes = listed(self.settings.outcome_events)
        costly_events = listed(self.settings.costly_events)
        # costly contacts: the named events, else every event of the costly channels
        channels = () if costly_events else COSTLY_CHANNELS
        return outcomes, costly_events, channels

    def seams(
        self,
        within: str = "2h",
        min_people: int = 30,
        *,
        funnel: list[str] | None = None,
        funnel_within: str = "1d",
        by: list[str] | None = None,
        outcome_within: str = "7d",
        include_all: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> SeamsResult:
        """Ranked failing hand-offs (see :meth:`seamline.app.Workspace.seams`)."""
        outcomes, costly_events, channels = self.declared()
        definition = SeamsDefinition(
            within=parse_duration(within), costly_channels=channels,
            costly_events=costly_events, outcome_events=outcomes,
            outcome_within=parse_duration(outcome_within, "outcome_within"),
            min_people=min_people, include_all=include_all,
        )  # fmt: skip
        funnels = {}
        for field_name in (by or ("app_version", "os_name", "source")) if funnel else ():
            funnels[field_name] = self.funnel(funnel or [], funnel_within, field_name,
                                              start=start, end=end).to_dict()  # fmt: skip
        plan = KernelPlan(
            functools.partial(seams_partial, definition=definition, as_of=end or utcnow()),
            merge_seams, functools.partial(finish_seams, definition=definition, funnels=funnels),
            ("event", "lane"), keep_ids=True,
        )  # fmt: skip
        return cast(SeamsResult, self._sequences(plan, DateRange(start, end), False, "channel"))

    def paths(
        self,
        event: str,
        steps: int = 3,
        direction: Literal["after", "before"] = "after",
        top: int = 10,
        collapse_repeats: bool = False,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> PathResult:
        """Top paths after (or before) each person's first ``event``."""
        definition = PathDefinition(event, steps, direction, top, collapse_repeats,
                                    DateRange(start, end))  # fmt: skip
        plan = KernelPlan(functools.partial(path_partial, definition=definition), merge_paths,
                          functools.partial(finish_paths, definition=definition),
                          ("event",))  # fmt: skip
        return cast(PathResult, self._sequences(plan, definition.dates, False, "channel"))

    def retention(
        self,
        start_event: str | None = None,
        return_event: str | None = None,
        period: str = "week",
        periods: int = 8,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> RetentionResult:
        """Cohorts by the period of each person's first ``start_event``, returns per offset."""
        definition = RetentionDefinition(start_event or None, return_event or None,
                                         check_period(period), periods,
                                         DateRange(start, end))  # fmt: skip
        snap = self._snapshot()
        table = None
        if snap is not None:
            table = retention_table(snap, definition.start_event, definition.return_event,
                                    definition.dates)  # fmt: skip
        plan = KernelPlan(
            functools.partial(retention_partial, definition=definition), merge_retention,
            functools.partial(finish_retention, definition=definition, as_of=end or utcnow()),
            flags=("is_start", "is_return"),
        )  # fmt: skip
        return cast(RetentionResult, self._run(plan, table, lambda: retention_query(
            definition.start_event, definition.return_event, definition.dates,
            dialect=self.engine.dialect)))  # fmt: skip

    def outcomes(
        self,
        period: str = "week",
        outcome: str | list[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> OutcomeResult:
        """Per period: outcome rate, time to outcome, costly contacts and containment."""
        declared, costly_events, costly_channels = self.declared()
        definition = OutcomeDefinition.build(declared, costly_events, costly_channels, outcome,
                                             period, DateRange(start, end))  # fmt: skip
        snap = self._snapshot()
        table = None
        if snap is not None:
            table = outcome_table(snap, definition.outcomes, definition.costly_events,
                                  definition.costly_channels, definition.dates)  # fmt: skip
        plan = KernelPlan(functools.partial(outcome_partial, definition=definition),
                          merge_outcomes, functools.partial(finish_outcomes, definition=definition),
                          flags=("is_outcome", "is_costly"))  # fmt: skip
        return cast(OutcomeResult, self._run(plan, table, lambda: outcome_query(
            definition.outcomes, definition.costly_events, definition.costly_channels,
            definition.dates, dialect=self.engine.dialect)))  # fmt: skip

    def _sequences(self, plan: KernelPlan, dates: DateRange, include_identify: bool,
                   lane: str) -> Result:  # fmt: skip
        """``plan`` over every touchpoint of every person in time order: from the snapshot,
        else SQL."""
        snap = self._snapshot([lane])
        table = sequence_table(snap, dates, include_identify, lane) if snap is not None else None
        return self._run(plan, table, lambda: sequence_query(dates, include_identify, lane,
                                                             dialect=self.engine.dialect))

    def _run(self, plan: KernelPlan, table: Any, sql: Callable[[], str]) -> Result:
        """``plan`` over ``table`` (a snapshot's rows), else over the rows of the query:
        on an engine that runs kernels itself (Spark: the partials on the executors), there;
        else over the rows it returns."""
        if table is None:
            run_kernel = getattr(self.engine, "run_kernel", None)
            if run_kernel is not None:
                return cast(Result, run_kernel(sql(), plan))
            table = self._rows(sql())
        return plan.run(table)
