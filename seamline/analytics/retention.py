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

from datetime import datetime

import numpy as np
import pyarrow as pa

from seamline.analytics.definitions import RetentionDefinition
from seamline.analytics.periods import period_index, period_label, period_of
from seamline.analytics.result import RetentionResult
from seamline.analytics.sequences import bool_column, distinct, from_table


def run_retention(table: pa.Table, definition: RetentionDefinition,
                  as_of: datetime) -> RetentionResult:  # fmt: skip
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
         "cohorts": rows, "people": len(owners)},
        "cohorts",
    )  # fmt: skip
