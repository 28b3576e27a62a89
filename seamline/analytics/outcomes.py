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

import numpy as np
import pyarrow as pa

from seamline.analytics.definitions import OutcomeDefinition
from seamline.analytics.periods import period_index, period_label
from seamline.analytics.result import OutcomeResult
from seamline.analytics.sequences import bool_column, from_table
from seamline.analytics.stats import quantiles

_US = 1_000_000


def run_outcomes(table: pa.Table, definition: OutcomeDefinition) -> OutcomeResult:
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
    people = np.bincount(period_of_group, minlength=n_periods)
    n_converted = np.bincount(period_of_group, weights=converted, minlength=n_periods)
    n_contacts = np.bincount(period_of_group, weights=contacts, minlength=n_periods)
    n_contained = np.bincount(period_of_group, weights=contained, minlength=n_periods)
    # times to outcome of converted people, grouped by period
    order = np.argsort(period_of_group[converted], kind="stable")
    by_period = np.split(seconds[converted][order], np.cumsum(n_converted.astype(np.int64))[:-1])

    rows = []
    for i, index in enumerate(periods.tolist()):
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
