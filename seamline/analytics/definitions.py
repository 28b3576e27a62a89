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
