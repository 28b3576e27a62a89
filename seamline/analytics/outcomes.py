"""Outcomes per period: rate, time to outcome, costly contacts and containment.

Semantics (see the README's "Outcomes"); each (person, period) is counted on its own:
- *people*: persons with at least one touchpoint (track, page, screen) in the period;
- *converted*: those with at least one outcome event in the period;
- *time to outcome*: from the person's first touchpoint in the period to their first
  outcome in it (0 when the outcome is the first touchpoint); median and 90th
  percentile over converted people, linearly interpolated;
- *contacts per person*: costly contact events in the period / people;
- *contained*: converted people with no costly contact in the period;
  *containment* = contained / people.
Only periods with at least one active person are listed, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seamline.analytics.definitions import OutcomeDefinition
from seamline.analytics.periods import period_index, period_label
from seamline.analytics.result import OutcomeResult
from seamline.analytics.sequences import KernelInput, bool_column, from_table
from seamline.analytics.stats import quantiles

_US = 1_000_000


@dataclass
class OutcomePartial:
    """Per period index (ascending) of a set of whole persons: active people, converted,
    costly contacts and contained; and each converted (person, period)'s seconds to the
    outcome with its period index."""

    periods: np.ndarray
    people: np.ndarray
    converted: np.ndarray
    contacts: np.ndarray
    contained: np.ndarray
    seconds: np.ndarray
    seconds_period: np.ndarray


def outcome_partial(table: KernelInput, definition: OutcomeDefinition) -> OutcomePartial:
    """The outcomes' partial over rows of whole persons sorted by (person, time)."""
    seq = from_table(table)
    person, ts = seq.person, seq.ts
    outcome, costly = bool_column(table, "is_outcome"), bool_column(table, "is_costly")
    period = period_index(ts, definition.period)

    # rows are sorted by (person, time), so each (person, period) is one contiguous run
    boundary = np.ones(len(ts), dtype=bool)
    boundary[1:] = (person[1:] != person[:-1]) | (period[1:] != period[:-1])
    group = np.cumsum(boundary) - 1
    heads = np.flatnonzero(boundary)
    n_groups = len(heads)

    outcome_rows = np.flatnonzero(outcome)
    converted_groups, first = np.unique(group[outcome_rows], return_index=True)
    converted = np.zeros(n_groups, dtype=bool)
    converted[converted_groups] = True
    seconds = np.zeros(n_groups, dtype=np.float64)
    seconds[converted_groups] = (ts[outcome_rows[first]] - ts[heads[converted_groups]]) / _US
    contacts = np.bincount(group, weights=costly, minlength=n_groups)
    contained = converted & (contacts == 0)

    periods, period_of_group = np.unique(period[heads], return_inverse=True)
    n_periods = len(periods)

    def per_period(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(period_of_group, weights=weights,
                           minlength=n_periods).astype(np.int64)  # fmt: skip

    return OutcomePartial(periods.astype(np.int64), per_period(None), per_period(converted),
                          per_period(contacts), per_period(contained), seconds[converted],
                          periods[period_of_group[converted]].astype(np.int64))  # fmt: skip


def merge_outcomes(parts: list[OutcomePartial]) -> OutcomePartial:
    """The partials of disjoint sets of persons as one."""
    if len(parts) == 1:
        return parts[0]
    periods, inverse = np.unique(np.concatenate([p.periods for p in parts]),
                                 return_inverse=True)  # fmt: skip

    def added(name: str) -> np.ndarray:
        return np.bincount(inverse, weights=np.concatenate([getattr(p, name) for p in parts]),
                           minlength=len(periods)).astype(np.int64)  # fmt: skip

    return OutcomePartial(periods, added("people"), added("converted"), added("contacts"),
                          added("contained"), np.concatenate([p.seconds for p in parts]),
                          np.concatenate([p.seconds_period for p in parts]))  # fmt: skip


def run_outcomes(table: KernelInput, definition: OutcomeDefinition) -> OutcomeResult:
    return finish_outcomes(outcome_partial(table, definition), definition)


def finish_outcomes(part: OutcomePartial, definition: OutcomeDefinition) -> OutcomeResult:
    """Rates, time-to-outcome quantiles, contacts and containment per period."""
    people, n_converted = part.people, part.converted
    n_contacts, n_contained = part.contacts, part.contained
    # times to outcome of converted people, grouped by period
    order = np.argsort(part.seconds_period, kind="stable")
    by_period = np.split(part.seconds[order], np.cumsum(n_converted)[:-1])

    rows = []
    for i, index in enumerate(part.periods.tolist()):
        median, p90 = quantiles(by_period[i])
        active, reached = int(people[i]), int(n_converted[i])
        rows.append({
            "period": period_label(index, definition.period), "people": active,
            "converted": reached, "outcome_rate": reached / active,
            "median_seconds_to_outcome": median, "p90_seconds_to_outcome": p90,
            "contacts": int(n_contacts[i]), "contacts_per_person": float(n_contacts[i]) / active,
            "contained": int(n_contained[i]), "containment": float(n_contained[i]) / active,
        })  # fmt: skip
    costly_rule = {"events": list(definition.costly_events),
                   "channels": list(definition.costly_channels)}  # fmt: skip
    return OutcomeResult(
        {"outcomes": list(definition.outcomes), "costly": costly_rule,
         "period": definition.period, "periods": rows},
        "periods",
    )  # fmt: skip
