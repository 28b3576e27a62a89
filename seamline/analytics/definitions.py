"""Analysis definitions: typed, validated, engine-free.

A definition says *what* to count; :mod:`seamline.analytics.query` turns it into the
event query for an engine, and the kernels count over sorted per-person sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from seamline.analytics.durations import parse_duration
from seamline.errors import BadRequest

#: Event columns an analysis may break down or filter by, besides ``properties.X`` and
#: ``context.X.Y`` paths and ``source`` (the source's name).
DIMENSIONS: tuple[str, ...] = (
    "channel", "unit", "source", "type", "os_name", "os_version", "app_name", "app_version",
    "app_build", "device_type", "device_model", "library_name", "library_version", "locale",
    "timezone",
)  # fmt: skip


def check_field(name: str) -> str:
    """A breakdown or filter field: a dimension, ``properties.x`` or ``context.x.y``."""
    if name in DIMENSIONS:
        return name
    head, _, rest = name.partition(".")
    if head in ("properties", "context", "traits") and rest and all(
        part.replace("_", "").replace("-", "").replace("$", "").isalnum()
        for part in rest.split(".")
    ):
        return name
    from seamline.errors import did_you_mean

    raise BadRequest(
        f"Unknown field '{name}'.{did_you_mean(name, DIMENSIONS)} Use one of "
        f"{', '.join(DIMENSIONS)}, or properties.NAME / context.NAME.SUB.",
        code="unknown_field",
    )


@dataclass(frozen=True)
class Step:
    """An event name, optionally narrowed by equality filters (``{"properties.plan": "pro"}``)."""

    event: str
    where: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.event.strip():
            raise BadRequest("A step needs an event name.", code="invalid_step")
        for name in self.where:
            check_field(name)

    @classmethod
    def parse(cls, text: str) -> Step:
        """``"Order Completed"`` or ``"Order Completed[properties.plan=pro,channel=web]"``."""
        if text.endswith("]") and "[" in text:
            event, _, filters = text[:-1].partition("[")
            where: dict[str, Any] = {}
            for part in filter(None, (p.strip() for p in filters.split(","))):
                key, sep, value = part.partition("=")
                if not sep:
                    raise BadRequest(
                        f"Step filter {part!r} should look like field=value.",
                        code="invalid_step",
                    )
                where[key.strip()] = value.strip()
            return cls(event.strip(), where)
        return cls(text.strip())

    @property
    def label(self) -> str:
        if not self.where:
            return self.event
        return f"{self.event}[{','.join(f'{k}={v}' for k, v in self.where.items())}]"


@dataclass(frozen=True)
class Exclusion:
    """Attempts with this event between step ``after`` and step ``before`` are excluded."""

    event: str
    after: int = 0
    before: int | None = None  # default: the last step


@dataclass(frozen=True)
class DateRange:
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class FunnelDefinition:
    steps: tuple[Step, ...]
    within: timedelta = timedelta(days=7)
    by: str | None = None
    by_step: int | None = None  # None: first touch (the person's first step-1 event)
    strict: bool = False
    step_windows: tuple[timedelta | None, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    dates: DateRange = DateRange()
    segment: dict[str, Any] = field(default_factory=dict)  # equality filters on events

    def __post_init__(self) -> None:
        if len(self.steps) < 2:
            raise BadRequest("A funnel needs at least two steps.", code="invalid_funnel")
        if self.by is not None:
            check_field(self.by)
        if self.by_step is not None and not 0 <= self.by_step < len(self.steps):
            raise BadRequest(
                f"Breakdown step {self.by_step + 1} is not a step of this funnel "
                f"(1-{len(self.steps)}).",
                code="invalid_funnel",
            )
        if self.step_windows and len(self.step_windows) != len(self.steps) - 1:
            raise BadRequest(
                f"Give one per-step window per step after the first ({len(self.steps) - 1}).",
                code="invalid_funnel",
            )
        for exclusion in self.exclusions:
            last = len(self.steps) - 1
            before = last if exclusion.before is None else exclusion.before
            if not 0 <= exclusion.after < before <= last:
                raise BadRequest(
                    f"Exclusion '{exclusion.event}' must sit between two steps (1-{last + 1}).",
                    code="invalid_funnel",
                )
        for name in self.segment:
            check_field(name)

    @classmethod
    def build(cls, steps: list[str] | list[Step], within: str | timedelta = "7d",
              by: str | None = None, **options: Any) -> FunnelDefinition:  # fmt: skip
        parsed = tuple(s if isinstance(s, Step) else Step.parse(s) for s in steps)
        windows = tuple(
            None if w in (None, "") else parse_duration(w, "step window")
            for w in options.pop("step_windows", ()) or ()
        )
        return cls(parsed, parse_duration(within), by, step_windows=windows, **options)


@dataclass(frozen=True)
class JourneyDefinition:
    """The directly-follows graph of touchpoints (event x channel)."""

    from_event: str | None = None
    min_people: int = 1
    top: int | None = None
    dates: DateRange = DateRange()
    include_identify: bool = False
    by: Literal["channel", "unit"] = "channel"

    def __post_init__(self) -> None:
        if self.min_people < 1:
            raise BadRequest("min_people must be at least 1.", code="invalid_journeys")
        if self.top is not None and self.top < 1:
            raise BadRequest("top must be at least 1.", code="invalid_journeys")


#: Calendar periods of retention and outcomes, in UTC; weeks start on Monday (ISO 8601).
PERIODS: tuple[str, ...] = ("day", "week")
#: Channels whose every event is a costly contact when no costly events are declared.
COSTLY_CHANNELS: tuple[str, ...] = ("call_center", "store")


def check_period(period: str) -> Literal["day", "week"]:
    if period not in PERIODS:
        from seamline.errors import did_you_mean

        raise BadRequest(
            f"Unknown period '{period}'; use 'day' or 'week'.{did_you_mean(period, PERIODS)}",
            code="invalid_period",
        )
    return period  # type: ignore[return-value]


def names_list(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"Order Completed, Loan Approved"`` -> ``("Order Completed", "Loan Approved")``.

    A list (``settings.json`` may hold one) is taken as it is; blanks and repeats are dropped.
    """
    parts = names.split(",") if isinstance(names, str) else names
    return tuple(dict.fromkeys(part.strip() for part in parts if part.strip()))


@dataclass(frozen=True)
class PathDefinition:
    """The top paths of ``steps`` touchpoints after (or before) a person's first ``event``."""

    event: str
    steps: int = 3
    direction: Literal["after", "before"] = "after"
    top: int = 10
    collapse_repeats: bool = False
    dates: DateRange = DateRange()

    def __post_init__(self) -> None:
        if not self.event.strip():
            raise BadRequest("Paths need an event to start (or end) at.", code="invalid_paths")
        if not 1 <= self.steps <= 20:
            raise BadRequest("steps must be between 1 and 20.", code="invalid_paths")
        if self.direction not in ("after", "before"):
            raise BadRequest(
                f"direction must be 'after' or 'before', not '{self.direction}'.",
                code="invalid_paths",
            )
        if self.top < 1:
            raise BadRequest("top must be at least 1.", code="invalid_paths")


@dataclass(frozen=True)
class RetentionDefinition:
    """Cohorts by the period of each person's first start event; returns per period offset.

    ``None`` for an event means any touchpoint (a track, page or screen call).
    """

    start_event: str | None = None
    return_event: str | None = None
    period: Literal["day", "week"] = "week"
    periods: int = 8
    dates: DateRange = DateRange()

    def __post_init__(self) -> None:
        check_period(self.period)
        if not 1 <= self.periods <= 366:
            raise BadRequest("periods must be between 1 and 366.", code="invalid_retention")


@dataclass(frozen=True)
class OutcomeDefinition:
    """Outcome rate, time to outcome, costly contacts and containment per period.

    A costly contact is an event named in ``costly_events`` or any event of one of the
    ``costly_channels``; the workspace declares the events, or else the channels.
    """

    outcomes: tuple[str, ...]
    costly_events: tuple[str, ...] = ()
    costly_channels: tuple[str, ...] = COSTLY_CHANNELS
    period: Literal["day", "week"] = "week"
    dates: DateRange = DateRange()

    def __post_init__(self) -> None:
        check_period(self.period)
        if not self.outcomes:
            raise BadRequest(
                "No outcome events: declare them in the setting outcome_events "
                "(SEAMLINE_OUTCOME_EVENTS) or pass an outcome.",
                code="invalid_outcomes",
            )

    @classmethod
    def build(cls, declared: tuple[str, ...], costly_events: tuple[str, ...],
              costly_channels: tuple[str, ...], outcome: str | list[str] | None = None,
              period: str = "week", dates: DateRange = DateRange()
              ) -> OutcomeDefinition:  # fmt: skip
        """The declared outcomes, or only ``outcome`` (one event name or several)."""
        if outcome is None or outcome == []:
            outcomes = declared
        else:  # one name may contain a comma, so a single outcome is not split
            outcomes = names_list([outcome] if isinstance(outcome, str) else outcome)
        return cls(outcomes, costly_events, costly_channels, check_period(period), dates)
