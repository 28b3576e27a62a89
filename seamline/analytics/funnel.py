"""Funnels over sorted per-person sequences, vectorised with NumPy.

Semantics (the default profile; see the README's "Funnel semantics"):
- every step-1 event starts an attempt; a step is matched by the *earliest* later
  event of that step, other events may come between (``strict``: the very next event);
- the window runs from the attempt's step 1 (inclusive); optional per-step windows
  bound the gap from the previous step;
- events at the same timestamp are taken in step order; one event never counts twice;
- a person counts once, at the furthest step any attempt reached (the earliest such
  attempt wins); if that attempt has an exclusion event between its steps, the person
  is dropped from the funnel, as PostHog does;
- a person whose counted attempt stopped short while its window is still open (relative
  to the end of the date range, or now) is *in progress* at the next step, not dropped.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from seamline.analytics.definitions import FunnelDefinition
from seamline.analytics.result import FunnelResult
from seamline.analytics.sequences import bool_column, dictionary, from_table
from seamline.analytics.stats import quantiles, wilson

_US = 1_000_000
NONE_LABEL = "(none)"


def _first_after(rows: NDArray[np.int64], after: NDArray[np.int64]
                 ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:  # fmt: skip
    """For each position, the first row in ``rows`` strictly after it (and whether any)."""
    if len(rows) == 0:
        return np.zeros_like(after), np.zeros(len(after), dtype=bool)
    index = np.searchsorted(rows, after, side="right")
    found = index < len(rows)
    return rows[np.minimum(index, len(rows) - 1)], found


def run_funnel(table: pa.Table, definition: FunnelDefinition, as_of: datetime) -> FunnelResult:
    seq = from_table(table)
    k_steps = len(definition.steps)
    flags = [bool_column(table, f"s{i}") for i in range(k_steps)]
    person, ts = seq.person, seq.ts
    within = int(definition.within.total_seconds() * _US)

    starts = np.flatnonzero(flags[0])
    attempts = len(starts)
    rows = np.full((attempts, k_steps), -1, dtype=np.int64)
    rows[:, 0] = starts
    reached = np.zeros(attempts, dtype=np.int64)
    position = starts.copy()
    alive = np.ones(attempts, dtype=bool)
    window_end = ts[starts] + within
    for k in range(1, k_steps):
        if definition.strict:
            candidate = position + 1
            found = candidate < len(ts)
            candidate = np.minimum(candidate, max(len(ts) - 1, 0))
            found &= flags[k][candidate] if len(ts) else found
        else:
            candidate, found = _first_after(np.flatnonzero(flags[k]), position)
        ok = alive & found & (person[candidate] == person[position])
        ok &= ts[candidate] <= window_end
        if definition.step_windows and definition.step_windows[k - 1] is not None:
            gap = definition.step_windows[k - 1]
            assert gap is not None
            ok &= ts[candidate] - ts[position] <= int(gap.total_seconds() * _US)
        position = np.where(ok, candidate, position)
        rows[ok, k] = candidate[ok]
        reached[ok] = k
        alive &= ok

    excluded = np.zeros(attempts, dtype=bool)
    for i, exclusion in enumerate(definition.exclusions):
        before = k_steps - 1 if exclusion.before is None else exclusion.before
        marks = np.flatnonzero(bool_column(table, f"x{i}"))
        if not len(marks) or not attempts:
            continue
        relevant = reached >= exclusion.after
        after_rows = np.maximum(rows[:, exclusion.after], 0)
        mark, found = _first_after(marks, after_rows)
        same = found & (person[mark] == person[after_rows])
        limit_row = rows[:, before]
        inside = np.where(reached >= before, mark < limit_row, ts[mark] <= window_end)
        excluded |= relevant & same & inside

    # the counted attempt per person: furthest step, then earliest
    # attempts are in row order, so each person's attempts are adjacent: one linear pass
    # (no sort) finds, per person, the first attempt reaching the person's furthest step
    attempt_person = person[starts] if attempts else np.zeros(0, dtype=np.int64)
    best = np.zeros(0, dtype=np.int64)
    if attempts:
        new_person = np.ones(attempts, dtype=bool)
        new_person[1:] = attempt_person[1:] != attempt_person[:-1]
        person_of = np.cumsum(new_person) - 1
        furthest = np.maximum.reduceat(reached, np.flatnonzero(new_person))
        candidates = np.flatnonzero(reached == furthest[person_of])
        first = np.ones(len(candidates), dtype=bool)
        first[1:] = person_of[candidates[1:]] != person_of[candidates[:-1]]
        best = candidates[first]
    best = best[~excluded[best]]
    as_of_us = int((as_of - datetime(1970, 1, 1)).total_seconds() * _US)
    open_window = window_end[best] > as_of_us

    breakdown_codes: NDArray[np.int64] | None = None
    labels: list[str | None] = []
    if definition.by is not None:
        codes, labels = dictionary(table, "breakdown")
        if definition.by_step is None:  # first touch: the person's first step-1 event
            # attempts are in row order, so a person's attempts are adjacent: each attempt's
            # person's first attempt is the last "new person" boundary at or before it
            first_start = np.ones(attempts, dtype=bool)
            first_start[1:] = attempt_person[1:] != attempt_person[:-1]
            first_attempt = np.flatnonzero(first_start)[np.cumsum(first_start) - 1]
            source_rows = starts[first_attempt[best]]
            breakdown_codes = codes[source_rows] if len(source_rows) else source_rows
        else:
            source_rows = rows[best, definition.by_step]
            breakdown_codes = np.where(source_rows >= 0, codes[np.maximum(source_rows, 0)],
                                       len(labels) - 1)  # fmt: skip

    step_rows = [np.ascontiguousarray(rows[:, k]) for k in range(k_steps)]  # 1-D gathers

    def summarise(selected: NDArray[np.int64], is_open: NDArray[np.bool_]) -> list[dict]:
        steps = []
        reach = reached[selected]
        entered = len(selected)
        previous = entered
        for k, step in enumerate(definition.steps):
            people = int(np.count_nonzero(reach >= k))
            entry = {"step": step.label, "event": step.event, "people": people,
                     "conversion": people / entered if entered else 0.0}  # fmt: skip
            low, high = wilson(people, entered)
            entry.update(ci_low=low, ci_high=high)
            if k == 0:
                entry.update(step_conversion=1.0 if entered else 0.0, dropped=0, in_progress=0,
                             median_seconds=None, p90_seconds=None)  # fmt: skip
            else:
                in_progress = int(np.count_nonzero((reach == k - 1) & is_open))
                chosen = selected[reach >= k]
                gaps = (ts[step_rows[k][chosen]] - ts[step_rows[k - 1][chosen]]) / _US
                median, p90 = quantiles(gaps.astype(np.float64))
                entry.update(step_conversion=people / previous if previous else 0.0,
                             dropped=previous - people - in_progress, in_progress=in_progress,
                             median_seconds=median, p90_seconds=p90)  # fmt: skip
            previous = people
            steps.append(entry)
        return steps

    data: dict = {"steps": summarise(best, open_window),
                  "within_seconds": definition.within.total_seconds(),
                  "as_of": as_of.isoformat()}  # fmt: skip
    if breakdown_codes is not None:
        breakdown = {}
        for code in np.unique(breakdown_codes):
            mask = breakdown_codes == code
            value = labels[int(code)]
            breakdown[NONE_LABEL if value is None else value] = summarise(best[mask],
                                                                          open_window[mask])
        data["breakdown"] = dict(sorted(breakdown.items(),
                                        key=lambda kv: (-kv[1][0]["people"], kv[0])))
    return FunnelResult(data, "steps")
