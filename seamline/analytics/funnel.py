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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seamline.analytics.definitions import FunnelDefinition
from seamline.analytics.kernels import same_names
from seamline.analytics.result import FunnelResult
from seamline.analytics.sequences import (
    KernelInput,
    SequenceArrays,
    as_arrays,
    distinct,
    tie_groups,
)
from seamline.analytics.stats import wilson

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


class _Flags:
    """Which rows of a chunk match each step (0..k-1) and each exclusion (k...): a bit mask
    per row (a snapshot's: bit i for flag i), or a boolean column per flag (a table's)."""

    def __init__(self, mask: NDArray[Any] | None, columns: list[NDArray[np.bool_]]):
        self.mask, self.columns = mask, columns

    @classmethod
    def of(cls, chunk: SequenceArrays, count: int, k_steps: int) -> _Flags:
        if "steps" in chunk.flags:
            return cls(np.asarray(chunk.flags["steps"]), [])
        names = [f"s{i}" for i in range(k_steps)] + [f"x{i}" for i in range(count - k_steps)]
        return cls(None, [np.asarray(chunk.flags[name]) for name in names])

    def column(self, i: int) -> NDArray[np.bool_]:
        if self.mask is None:
            return self.columns[i]
        return self.mask & self.mask.dtype.type(1 << i) != 0

    def rows(self, i: int) -> NDArray[np.int64]:
        """The rows of flag ``i``, ascending."""
        return np.flatnonzero(self.column(i))

    def at(self, i: int, rows: NDArray[np.int64]) -> NDArray[np.bool_]:
        if self.mask is None:
            return self.columns[i][rows]
        return self.mask[rows] & self.mask.dtype.type(1 << i) != 0

    def reordered(self, order: NDArray[np.int64]) -> _Flags:
        if self.mask is None:
            return _Flags(None, [c[order] for c in self.columns])
        return _Flags(self.mask[order], [])


def _ties_in_step_order(person: NDArray[Any], ts: NDArray[np.int64], flags: _Flags,
                        k_steps: int) -> NDArray[np.int64] | None:  # fmt: skip
    """The permutation that puts rows of equal (person, ts) in step order (a row's first
    matching step; rows of no step last), keeping their order otherwise (message_id: the
    funnel query's ORDER BY); None when there are no such ties (the SQL path's rows are
    already in that order)."""
    found = tie_groups(person, ts)
    if found is None:
        return None
    at, group = found
    tie = np.full(len(person), k_steps, dtype=np.int64)
    for i in reversed(range(k_steps)):
        tie[flags.column(i)] = i
    order = np.arange(len(person), dtype=np.int64)
    order[at] = at[np.lexsort((tie[at], group))]  # stable: earlier rows first among equals
    return order


def _quantiles(values: NDArray[np.float64]) -> tuple[float | None, float | None]:
    """:func:`~seamline.analytics.stats.quantiles` of a temporary array (partitioned in
    place: the same values, without a copy)."""
    if len(values) == 0:
        return None, None
    median, p90 = np.quantile(values, [0.5, 0.9], overwrite_input=True)
    return float(median), float(p90)


@dataclass
class _People:
    """Per person of one chunk (the counted attempt): furthest step, window still open,
    breakdown code, and per step k >= 1 the gaps (us) of the people who reached it."""

    reach: NDArray[np.int64]
    is_open: NDArray[np.bool_]
    codes: NDArray[Any] | None
    gaps: list[NDArray[np.int64]]


def _count_chunk(chunk: SequenceArrays, definition: FunnelDefinition, as_of_us: int,
                 null_code: int) -> _People:  # fmt: skip
    """The funnel over one chunk of whole persons."""
    k_steps = len(definition.steps)
    flags = _Flags.of(chunk, k_steps + len(definition.exclusions), k_steps)
    person, ts = chunk.person, chunk.ts
    codes: NDArray[Any] | None = None
    if definition.by is not None:
        codes = np.asarray(chunk.text["breakdown"][0])
    order = _ties_in_step_order(person, ts, flags, k_steps) if chunk.ties else None
    if order is not None:  # same-timestamp rows: steps in step order
        person, ts, flags = person[order], ts[order], flags.reordered(order)
        codes = codes[order] if codes is not None else None
    within = int(definition.within.total_seconds() * _US)
    n = len(ts)

    starts = flags.rows(0)
    attempts = len(starts)
    step_rows = [starts] + [np.full(attempts, -1, dtype=np.int64) for _ in range(1, k_steps)]
    reached = np.zeros(attempts, dtype=np.int64)
    window_end = ts[starts] + within
    # only the attempts still alive are followed to the next step
    live = np.arange(attempts, dtype=np.int64)
    position = starts
    for k in range(1, k_steps):
        if definition.strict:
            candidate = position + 1
            found = candidate < n
            candidate = np.minimum(candidate, max(n - 1, 0))
            found &= flags.at(k, candidate) if n else found
        else:  # the next row of step k: the count of step-k rows up to the position
            flagged = flags.column(k)
            marks = np.flatnonzero(flagged)
            index = np.cumsum(flagged, dtype=np.int64)[position]
            found = index < len(marks)
            candidate = marks[np.minimum(index, len(marks) - 1)] if len(marks) else position
        ok = found & (person[candidate] == person[position])
        ok &= ts[candidate] <= window_end[live]
        if definition.step_windows and definition.step_windows[k - 1] is not None:
            gap = definition.step_windows[k - 1]
            assert gap is not None
            ok &= ts[candidate] - ts[position] <= int(gap.total_seconds() * _US)
        live, position = live[ok], candidate[ok]
        step_rows[k][live] = position
        reached[live] = k
        if not len(live):
            break

    excluded = np.zeros(attempts, dtype=bool)
    for x, exclusion in enumerate(definition.exclusions):
        before = k_steps - 1 if exclusion.before is None else exclusion.before
        marks = flags.rows(k_steps + x)
        if not len(marks) or not attempts:
            continue
        relevant = reached >= exclusion.after
        after_rows = np.maximum(step_rows[exclusion.after], 0)
        mark, found = _first_after(marks, after_rows)
        same = found & (person[mark] == person[after_rows])
        limit_row = step_rows[before]
        inside = np.where(reached >= before, mark < limit_row, ts[mark] <= window_end)
        excluded |= relevant & same & inside

    # the counted attempt per person: furthest step, then earliest
    # attempts are in row order, so each person's attempts are adjacent: one linear pass
    # (no sort) finds, per person, the first attempt reaching the person's furthest step
    attempt_person = person[starts]
    best = np.zeros(0, dtype=np.int64)
    first_start = np.ones(attempts, dtype=bool)
    if attempts:
        first_start[1:] = attempt_person[1:] != attempt_person[:-1]
        person_of = np.cumsum(first_start) - 1
        furthest = np.maximum.reduceat(reached, np.flatnonzero(first_start))
        candidates = np.flatnonzero(reached == furthest[person_of])
        first = np.ones(len(candidates), dtype=bool)
        first[1:] = person_of[candidates[1:]] != person_of[candidates[:-1]]
        best = candidates[first]
    best = best[~excluded[best]]
    reach = reached[best]
    is_open = window_end[best] > as_of_us

    best_codes: NDArray[Any] | None = None
    if codes is not None:
        if definition.by_step is None:  # first touch: the person's first step-1 event
            # each attempt's person's first attempt is the last "new person" boundary at or
            # before it
            first_attempt = np.flatnonzero(first_start)[np.cumsum(first_start) - 1]
            best_codes = codes[starts[first_attempt[best]]]
        else:
            source_rows = step_rows[definition.by_step][best]
            best_codes = np.where(source_rows >= 0, codes[np.maximum(source_rows, 0)],
                                  null_code)  # fmt: skip
    gaps = []
    for k in range(1, k_steps):
        chosen = best[reach >= k]
        gaps.append(ts[step_rows[k][chosen]] - ts[step_rows[k - 1][chosen]])
    return _People(reach, is_open, best_codes, gaps)


@dataclass
class FunnelPartial:
    """The counted attempt of every person of a set of whole persons (:class:`_People`,
    concatenated); breakdown codes index ``labels``."""

    labels: list[str | None]
    people: _People


def _joined(parts: list[_People], k_steps: int) -> _People:
    if len(parts) == 1:
        return parts[0]
    codes = [p.codes for p in parts if p.codes is not None]
    return _People(np.concatenate([p.reach for p in parts]),
                   np.concatenate([p.is_open for p in parts]),
                   np.concatenate(codes) if codes else None,
                   [np.concatenate([p.gaps[k] for p in parts]) for k in range(k_steps - 1)])


def funnel_partial(table: KernelInput, definition: FunnelDefinition,
                   as_of: datetime) -> FunnelPartial:  # fmt: skip
    """The funnel's partial over rows of whole persons sorted as the funnel query sorts."""
    k_steps = len(definition.steps)
    flag_names = funnel_flags(definition)
    if isinstance(table, SequenceArrays):
        flag_names = ()
    data = as_arrays(table, ("breakdown",) if definition.by is not None else (), flag_names)
    labels: list[str | None] = data.text["breakdown"][1] if definition.by is not None else []
    as_of_us = int((as_of - datetime(1970, 1, 1)).total_seconds() * _US)
    # chunk by chunk (never splitting a person): each chunk's temporaries stay small
    parts = [_count_chunk(chunk, definition, as_of_us, len(labels) - 1)
             for chunk in data.chunks()]  # fmt: skip
    if not parts:
        parts = [_count_chunk(data.materialized(), definition, as_of_us, len(labels) - 1)]
    return FunnelPartial(list(labels), _joined(parts, k_steps))


def funnel_flags(definition: FunnelDefinition) -> tuple[str, ...]:
    """The boolean columns of the funnel query: a flag per step, then per exclusion."""
    return tuple(f"s{i}" for i in range(len(definition.steps))) + tuple(
        f"x{i}" for i in range(len(definition.exclusions)))  # fmt: skip


def merge_funnel(parts: list[FunnelPartial], definition: FunnelDefinition) -> FunnelPartial:
    """The partials of disjoint sets of persons (coded alike) as one."""
    same_names(parts, "labels")
    return FunnelPartial(parts[0].labels,
                         _joined([p.people for p in parts], len(definition.steps)))


def run_funnel(table: KernelInput, definition: FunnelDefinition, as_of: datetime
               ) -> FunnelResult:  # fmt: skip
    return finish_funnel(funnel_partial(table, definition, as_of), definition, as_of)


def finish_funnel(part: FunnelPartial, definition: FunnelDefinition,
                  as_of: datetime) -> FunnelResult:  # fmt: skip
    """People per breakdown value and step, conversions, intervals and step times."""
    k_steps = len(definition.steps)
    labels = part.labels
    reach, open_window, gaps = part.people.reach, part.people.is_open, part.people.gaps
    breakdown_codes = part.people.codes if definition.by is not None else None
    if definition.by is not None and breakdown_codes is None:
        breakdown_codes = np.zeros(0, dtype=np.int64)

    # people per (breakdown value, furthest step) and those of them still in their window
    if breakdown_codes is not None:
        values = distinct(breakdown_codes.astype(np.int64))
        group = np.searchsorted(values, breakdown_codes)
    else:
        values, group = np.zeros(1, dtype=np.int64), np.zeros(len(reach), dtype=np.int64)
    n_groups = len(values)
    cell = group * k_steps + reach
    tally = np.bincount(cell, minlength=n_groups * k_steps).reshape(n_groups, k_steps)
    open_tally = np.bincount(cell[open_window], minlength=n_groups * k_steps).reshape(
        n_groups, k_steps)  # fmt: skip
    seconds = [g / _US for g in gaps]  # per step k >= 1: people who reached it, in order
    groups_of = [group[reach >= k] for k in range(1, k_steps)]

    def summarise(tally: NDArray[np.int64], open_tally: NDArray[np.int64],
                  selected: int | None) -> list[dict]:
        """The steps of the people of one breakdown value (None: everybody)."""
        steps = []
        reached = np.cumsum(tally[::-1])[::-1]  # people whose furthest step is >= k
        entered = int(reached[0])
        previous = entered
        for k, step in enumerate(definition.steps):
            people = int(reached[k])
            entry = {"step": step.label, "event": step.event, "people": people,
                     "conversion": people / entered if entered else 0.0}  # fmt: skip
            low, high = wilson(people, entered)
            entry.update(ci_low=low, ci_high=high)
            if k == 0:
                entry.update(step_conversion=1.0 if entered else 0.0, dropped=0, in_progress=0,
                             median_seconds=None, p90_seconds=None)  # fmt: skip
            else:
                in_progress = int(open_tally[k - 1])
                if selected is None:  # summarised last: its seconds may be reordered
                    median, p90 = _quantiles(seconds[k - 1])
                else:
                    median, p90 = _quantiles(seconds[k - 1][groups_of[k - 1] == selected])
                entry.update(step_conversion=people / previous if previous else 0.0,
                             dropped=previous - people - in_progress, in_progress=in_progress,
                             median_seconds=median, p90_seconds=p90)  # fmt: skip
            previous = people
            steps.append(entry)
        return steps

    breakdown = {}
    for g, code in enumerate(values.tolist() if breakdown_codes is not None else ()):
        value = labels[int(code)]
        breakdown[NONE_LABEL if value is None else value] = summarise(
            tally[g], open_tally[g], g)  # fmt: skip
    data_out: dict = {"steps": summarise(tally.sum(axis=0), open_tally.sum(axis=0), None),
                      "within_seconds": definition.within.total_seconds(),
                      "as_of": as_of.isoformat()}  # fmt: skip
    if breakdown_codes is not None:
        data_out["breakdown"] = dict(sorted(breakdown.items(),
                                            key=lambda kv: (-kv[1][0]["people"], kv[0])))
    return FunnelResult(data_out, "steps")
