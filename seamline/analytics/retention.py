"""Cohort retention over sorted per-person touchpoints.

Semantics (see the README's "Retention"):
- a person's cohort is the period (UTC day, or ISO week from Monday) of their *first*
  start event in the date range; no start event, no cohort;
- the person is retained at offset k when they did the return event strictly later than
  that first start event, in the period k periods after the cohort's (offset 0 is the
  cohort period itself, so the first start event never counts as its own return);
- ``retained[k]`` counts people, each at most once per offset; ``rates[k]`` divides by
  the cohort's people; offsets whose period had not begun at ``as_of`` (the end of the
  range, or now) are not observed yet: ``periods_observed`` says how many were.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from seamline.analytics.definitions import RetentionDefinition
from seamline.analytics.periods import period_index, period_label, period_of
from seamline.analytics.result import RetentionResult
from seamline.analytics.sequences import KernelInput, bool_column, distinct, from_table


@dataclass
class RetentionPartial:
    """Per cohort (period index, ascending) of a set of whole persons: its people and the
    people retained at each offset."""

    cohorts: np.ndarray
    sizes: np.ndarray
    retained: np.ndarray


def retention_partial(table: KernelInput, definition: RetentionDefinition) -> RetentionPartial:
    """Retention's partial over rows of whole persons sorted by (person, time)."""
    seq = from_table(table)
    person, ts = seq.person, seq.ts
    period, width = definition.period, definition.periods
    n_people = int(person[-1]) + 1 if len(person) else 0

    starts = np.flatnonzero(bool_column(table, "is_start"))
    owners, first = np.unique(person[starts], return_index=True)
    first_ts = np.zeros(n_people, dtype=np.int64)
    first_ts[owners] = ts[starts[first]]
    has_cohort = np.zeros(n_people, dtype=bool)
    has_cohort[owners] = True
    cohort_period = np.zeros(n_people, dtype=np.int64)
    cohort_period[owners] = period_index(first_ts[owners], period)
    cohorts, cohort_of_owner, cohort_sizes = np.unique(
        cohort_period[owners], return_inverse=True, return_counts=True
    )
    cohort = np.full(n_people, -1, dtype=np.int64)
    cohort[owners] = cohort_of_owner

    returns = np.flatnonzero(bool_column(table, "is_return"))
    who = person[returns]
    offset = period_index(ts[returns], period) - cohort_period[who]
    counted = has_cohort[who] & (ts[returns] > first_ts[who]) & (offset < width)
    # one count per (person, offset), however many returns the person made in that period
    pairs = distinct(who[counted] * width + offset[counted])
    retained = np.zeros((len(cohorts), width), dtype=np.int64)
    np.add.at(retained, (cohort[pairs // width], pairs % width), 1)
    return RetentionPartial(cohorts.astype(np.int64), cohort_sizes.astype(np.int64), retained)


def merge_retention(parts: list[RetentionPartial]) -> RetentionPartial:
    """The partials of disjoint sets of persons as one."""
    if len(parts) == 1:
        return parts[0]
    cohorts, inverse = np.unique(np.concatenate([p.cohorts for p in parts]),
                                 return_inverse=True)  # fmt: skip
    sizes = np.bincount(inverse, weights=np.concatenate([p.sizes for p in parts]),
                        minlength=len(cohorts)).astype(np.int64)  # fmt: skip
    width = parts[0].retained.shape[1]
    retained = np.zeros((len(cohorts), width), dtype=np.int64)
    np.add.at(retained, inverse, np.concatenate([p.retained for p in parts]))
    return RetentionPartial(cohorts, sizes, retained)


def run_retention(table: KernelInput, definition: RetentionDefinition,
                  as_of: datetime) -> RetentionResult:  # fmt: skip
    return finish_retention(retention_partial(table, definition), definition, as_of)


def finish_retention(part: RetentionPartial, definition: RetentionDefinition,
                     as_of: datetime) -> RetentionResult:  # fmt: skip
    """Rates and the offsets observed by ``as_of``, per cohort."""
    period, width = definition.period, definition.periods
    cohorts, cohort_sizes, retained = part.cohorts, part.sizes, part.retained
    observed = np.clip(period_of(as_of, period) - cohorts + 1, 0, width)
    rows = [
        {"cohort": period_label(int(c), period), "people": int(size),
         "retained": counts.tolist(), "rates": (counts / size).tolist(),
         "periods_observed": int(seen)}
        for c, size, counts, seen in zip(cohorts, cohort_sizes, retained, observed, strict=True)
    ]  # fmt: skip
    return RetentionResult(
        {"period": period, "periods": width, "start_event": definition.start_event,
         "return_event": definition.return_event, "as_of": as_of.isoformat(),
         "cohorts": rows, "people": int(cohort_sizes.sum())},
        "cohorts",
    )  # fmt: skip
