"""Seams: hand-offs after which customers fail or fall back to a costlier channel.

Four kinds of candidate, each tested against a stated baseline, all candidates together
under Benjamini-Hochberg false-discovery control (see the README's "Seams"):

- ``costly_contact``: after touchpoint A (event x channel), the share of people who reach a
  costly contact (a channel such as the call centre, or a configured event) within T,
  anything in between allowed. Unit: each person's first occurrence of A whose window has
  closed (open windows are censored, not counted as "did not call"). Baseline: people of
  the same channel who never did A, measured from their first touchpoint in that channel.
  An event that merely co-occurs with the real cause (same session) therefore shows no
  lift, and a touchpoint everybody passes through has no baseline and is not a candidate;
  nor is one whose baseline never reaches the contact (lift undefined, and usually a
  population that cannot be linked to contacts rather than a seam).
- ``loop``: the same touchpoint repeated at once (a retry), against no retry, by the same
  costly-contact share.
- ``outcome``: a hand-off between channels (A in X, then B in Y as the person's next
  touchpoint, within T) whose travellers reach a declared outcome within the outcome
  window less often than people who took any other route (within T) from A.
- ``segment``: a funnel step whose conversion, in one value of a breakdown (app version,
  OS, channel, source), is lower than in all other values pooled. Mix-shift caveat: a
  segment can differ because of who is in it, not because of the step.

Tests are one-sided Fisher exact tests; intervals are Wilson 95%; candidates need
``min_people`` on both sides (and ``min_followed`` contacts for costly-contact kinds).
Person-level units keep one observation per person per candidate; the baseline pools
other touchpoints, so the two groups may share persons (an approximation, stated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from seamline.analytics.durations import format_duration
from seamline.analytics.result import Result
from seamline.analytics.sequences import dictionary, distinct, from_table
from seamline.analytics.stats import benjamini_hochberg, two_proportion_p, wilson

_US = 1_000_000
MIX_SHIFT_NOTE = (
    "Segment seams compare a value against all others pooled; a difference can come from "
    "who is in the segment (mix shift), not from the step itself. Check the segment's "
    "traffic mix before blaming the release or the channel."
)


@dataclass(frozen=True)
class SeamsDefinition:
    within: timedelta = timedelta(hours=2)
    costly_channels: tuple[str, ...] = ("call_center", "store")
    costly_events: tuple[str, ...] = ()
    outcome_events: tuple[str, ...] = ()
    outcome_within: timedelta = timedelta(days=30)
    min_people: int = 30
    min_followed: int = 5  # a costly-contact seam needs at least this many contacts
    alpha: float = 0.05
    include_all: bool = False
    people_examples: int = 10


class SeamsResult(Result):
    pass


@dataclass
class _Candidate:
    kind: str
    row: dict[str, Any]
    x1: int
    n1: int
    x0: int
    n0: int
    alternative: str  # "greater": more costly contacts; "less": fewer outcomes
    examples: list[str] = field(default_factory=list)


def _first_after(rows: NDArray[np.int64], after: NDArray[np.int64], inclusive: bool = False
                 ) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:  # fmt: skip
    if len(rows) == 0:
        return np.zeros_like(after), np.zeros(len(after), dtype=bool)
    index = np.searchsorted(rows, after, side="left" if inclusive else "right")
    found = index < len(rows)
    return rows[np.minimum(index, len(rows) - 1)], found


def _first_per(owner: NDArray[np.int64], code: NDArray[np.int64], rows: NDArray[np.int64],
               n_codes: int, in_row_order: bool = True) -> NDArray[np.int64]:  # fmt: skip
    """The first row of each (owner, code) pair; ``owner`` ascends with ``rows`` (persons).

    One stable sort by the small ``code`` (a radix sort below 65536 codes) keeps rows in
    order within each code, so each owner's first row there starts a run: no sort of
    ``owner * n_codes + code`` keys. Returned in row order (else grouped by code).
    """
    if len(rows) == 0:
        return rows
    order = np.argsort(code.astype(np.uint16 if n_codes <= 1 << 16 else np.int64),
                       kind="stable")  # fmt: skip
    by_code, by_owner = code[order], owner[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (by_code[1:] != by_code[:-1]) | (by_owner[1:] != by_owner[:-1])
    firsts = rows[order[new]]
    return np.sort(firsts) if in_row_order else firsts


def _next_of(marked: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """For every row, the first marked row strictly after it (and whether there is one),
    by a reversed running minimum instead of a binary search per row."""
    n = len(marked)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    at = np.where(marked, np.arange(n, dtype=np.int64), n)
    at_or_after = np.minimum.accumulate(at[::-1])[::-1]
    nxt = np.empty(n, dtype=np.int64)
    nxt[:-1] = at_or_after[1:]
    nxt[-1] = n
    found = nxt < n
    return np.minimum(nxt, n - 1), found


class _Scan:
    def __init__(self, table: pa.Table, definition: SeamsDefinition, as_of: datetime):
        seq = from_table(table, keep_ids=True)
        self.person, self.ts, self.ids = seq.person, seq.ts, seq.person_ids
        self.events, self.event_names = dictionary(table, "event")
        self.lanes, self.lane_names = dictionary(table, "lane")
        self.n_lanes = len(self.lane_names)
        self.node = self.events * self.n_lanes + self.lanes
        self.n_nodes = len(self.event_names) * self.n_lanes
        self.definition = definition
        self.as_of = int((as_of - datetime(1970, 1, 1)).total_seconds() * _US)
        # code -> flag tables, then one lookup per row (np.isin would sort)
        costly_events = np.array([e in definition.costly_events for e in self.event_names])
        costly_lanes = np.array([c in definition.costly_channels for c in self.lane_names])
        self.costly = costly_events[self.events] | costly_lanes[self.lanes]
        outcomes = np.array([e in definition.outcome_events for e in self.event_names])
        self.outcome = outcomes[self.events]
        self.rows = np.arange(len(self.person), dtype=np.int64)

    def label(self, node: int) -> tuple[str | None, str | None]:
        return self.event_names[node // self.n_lanes], self.lane_names[node % self.n_lanes]

    def examples(self, rows: NDArray[np.int64]) -> list[str]:
        persons = distinct(self.person[rows])[: self.definition.people_examples]
        return [self.ids[int(p)] for p in persons]

    def costly_candidates(self) -> list[_Candidate]:
        d = self.definition
        window = int(d.within.total_seconds() * _US)
        person, ts, node, lanes = self.person, self.ts, self.node, self.lanes
        closed = ts + window <= self.as_of
        eligible = self.rows[~self.costly & closed]
        # the person's first occurrence of each touchpoint, and of the channel at all
        first = _first_per(person[eligible], node[eligible], eligible, self.n_nodes)
        # a person's first row in a channel is the first row of one of its touchpoints
        entry = _first_per(person[first], lanes[first], first, self.n_lanes)
        entry_key = person[entry] * self.n_lanes + lanes[entry]
        order = np.argsort(entry_key)
        entry_sorted, entry_key_sorted = entry[order], entry_key[order]
        # who did each touchpoint at all (open windows too), to keep them out of its baseline
        touched = self.rows[~self.costly]
        did_rows = _first_per(person[touched], node[touched], touched, self.n_nodes,
                              in_row_order=False)  # fmt: skip
        did = person[did_rows] * self.n_nodes + node[did_rows]  # distinct (order not used)
        did_person, did_node = did // self.n_nodes, did % self.n_nodes
        did_entry_at = np.searchsorted(entry_key_sorted, did_person * self.n_lanes
                                       + did_node % self.n_lanes)  # fmt: skip
        has_entry = did_entry_at < len(entry_key_sorted)
        has_entry[has_entry] = entry_key_sorted[did_entry_at[has_entry]] == (
            did_person * self.n_lanes + did_node % self.n_lanes)[has_entry]  # fmt: skip
        # the rows of ``first`` grouped by touchpoint, in row order within each group (once,
        # rather than a full scan of ``first`` per touchpoint and costly channel)
        first_node = node[first]
        by_node = np.argsort(first_node.astype(np.uint16 if self.n_nodes <= 1 << 16 else np.int64),
                             kind="stable")  # fmt: skip
        tally = np.bincount(first_node, minlength=self.n_nodes)
        node_codes = np.flatnonzero(tally)
        node_counts = tally[node_codes]
        node_starts = np.cumsum(node_counts) - node_counts
        groups = [(code, by_node[start:start + count]) for code, start, count in
                  zip(node_codes.tolist(), node_starts.tolist(), node_counts.tolist(),
                      strict=True)]  # fmt: skip
        out: list[_Candidate] = []
        following = np.minimum(first + 1, max(len(person) - 1, 0))
        retried = (first + 1 < len(person)) & (person[following] == person[first]) & (
            node[following] == node[first])  # fmt: skip
        entry_at = np.searchsorted(first, entry_sorted)  # entries are rows of ``first``
        first_person, first_ts = person[first], ts[first]
        for lane_code in distinct(lanes[self.costly]).tolist():
            nxt, found = _next_of(self.costly & (lanes == lane_code))
            # whether each row of ``first`` reaches the contact within T (only those count)
            after = nxt[first]
            followed = found[first] & (person[after] == first_person) & (
                ts[after] - first_ts <= window)  # fmt: skip
            entry_followed = followed[entry_at]
            # per channel: people entering it (closed window) and how many reached the contact
            n_lane = np.bincount(lanes[entry_sorted], minlength=self.n_lanes)
            f_lane = np.bincount(lanes[entry_sorted], weights=entry_followed,
                                 minlength=self.n_lanes)  # fmt: skip
            # per touchpoint: the entry rows of the people who did it (to subtract)
            hit = did_entry_at[has_entry]
            n_did = np.bincount(did_node[has_entry], minlength=self.n_nodes)
            f_did = np.bincount(did_node[has_entry], weights=entry_followed[hit],
                                minlength=self.n_nodes)  # fmt: skip
            to_label = f"any {self.lane_names[lane_code]} contact"
            for code, members in groups:
                event, lane = self.label(code)
                mine = first[members]
                mine_retried = retried[members]
                mine_followed = followed[members]
                n1, x1 = len(mine), int(mine_followed.sum())
                lane_index = code % self.n_lanes
                n0 = int(n_lane[lane_index] - n_did[code])
                x0 = int(f_lane[lane_index] - f_did[code])
                base = {"from": event, "from_channel": lane, "to": to_label,
                        "to_channel": self.lane_names[lane_code],
                        "within_seconds": d.within.total_seconds()}  # fmt: skip
                # a baseline where nobody ever reaches the contact is not comparable (often
                # people who cannot be linked to contacts at all): no candidate
                if n1 >= d.min_people and n0 >= d.min_people and x1 >= d.min_followed and x0 > 0:
                    out.append(_Candidate("costly_contact", dict(base), x1, n1, x0, n0, "greater",
                                          self.examples(mine[mine_followed])))  # fmt: skip
                loop_rows, plain_rows = mine[mine_retried], mine[~mine_retried]
                loop_followed = mine_followed[mine_retried]
                loop_hits = int(loop_followed.sum())
                if (len(loop_rows) >= d.min_people and len(plain_rows) >= d.min_people
                        and loop_hits >= d.min_followed):  # fmt: skip
                    out.append(_Candidate(
                        "loop", {**base, "from": f"{event} (retried)"},
                        loop_hits, len(loop_rows), int(mine_followed[~mine_retried].sum()),
                        len(plain_rows), "greater", self.examples(loop_rows[loop_followed]),
                    ))  # fmt: skip
        return out

    def outcome_candidates(self) -> list[_Candidate]:
        d = self.definition
        if not d.outcome_events or len(self.person) < 2:
            return []
        window = int(d.outcome_within.total_seconds() * _US)
        person, ts, node = self.person, self.ts, self.node
        rows = self.rows[:-1]
        # a hand-off is the person's next touchpoint within T (a later touchpoint, such as a
        # campaign email days after a session, is not a route taken from this point)
        handoff = int(d.within.total_seconds() * _US)
        moves = (person[1:] == person[:-1]) & ~self.outcome[:-1] & (ts[:-1] + window <= self.as_of)
        moves &= ts[1:] - ts[:-1] <= handoff
        rows = rows[moves]
        target = np.flatnonzero(self.outcome)
        reach, found = _first_after(target, rows + 1, inclusive=True)
        reached = found & (person[reach] == person[rows]) & (ts[reach] - ts[rows] <= window)
        keep = _first_per(person[rows], node[rows], np.arange(len(rows)), self.n_nodes)
        rows, reached = rows[keep], reached[keep]
        from_node, to_node = node[rows], node[rows + 1]
        pair = from_node * self.n_nodes + to_node
        pairs, pair_n = np.unique(pair, return_counts=True)
        pair_x = np.bincount(np.searchsorted(pairs, pair), weights=reached,
                             minlength=len(pairs)).astype(np.int64)  # fmt: skip
        froms, from_n = np.unique(from_node, return_counts=True)
        from_x = np.bincount(np.searchsorted(froms, from_node), weights=reached,
                             minlength=len(froms)).astype(np.int64)  # fmt: skip
        from_index = {int(c): i for i, c in enumerate(froms.tolist())}
        out = []
        for i, code in enumerate(pairs.tolist()):
            a, b = code // self.n_nodes, code % self.n_nodes
            if a % self.n_lanes == b % self.n_lanes:
                continue  # only hand-offs between channels
            j = from_index[a]
            n1, x1 = int(pair_n[i]), int(pair_x[i])
            n0, x0 = int(from_n[j]) - n1, int(from_x[j]) - x1
            if n1 < d.min_people or n0 < d.min_people:
                continue
            (fe, fl), (te, tl) = self.label(a), self.label(b)
            mine = rows[pair == code]
            out.append(_Candidate(
                "outcome",
                {"from": fe, "from_channel": fl, "to": te, "to_channel": tl,
                 "within_seconds": d.outcome_within.total_seconds(),
                 "outcomes": list(d.outcome_events)},
                x1, n1, x0, n0, "less", self.examples(mine[~reached[pair == code]]),
            ))  # fmt: skip
        return out


def segment_candidates(funnels: dict[str, dict[str, Any]], min_people: int) -> list[_Candidate]:
    """Funnel steps whose conversion in one breakdown value is lower than in the others."""
    out = []
    for field_name, result in funnels.items():
        breakdown = result.get("breakdown", {})
        for k in range(1, len(result["steps"])):
            totals_n = sum(v[k - 1]["people"] - v[k]["in_progress"] for v in breakdown.values())
            totals_x = sum(v[k]["people"] for v in breakdown.values())
            for value, steps in breakdown.items():
                n1 = steps[k - 1]["people"] - steps[k]["in_progress"]
                x1 = steps[k]["people"]
                n0, x0 = totals_n - n1, totals_x - x1
                if n1 < min_people or n0 < min_people:
                    continue
                out.append(_Candidate(
                    "segment",
                    {"from": steps[k - 1]["step"], "from_channel": None, "to": steps[k]["step"],
                     "to_channel": None, "within_seconds": result["within_seconds"],
                     "segment": {"field": field_name, "value": value}},
                    x1, n1, x0, n0, "less",
                ))  # fmt: skip
    return out


def _describe(kind: str, row: dict[str, Any]) -> str:
    rate, base = row["rate"], row["baseline_rate"]
    window = format_duration(timedelta(seconds=row["within_seconds"]))
    if kind in ("costly_contact", "loop"):
        return (f"after {row['from']} in {row['from_channel']}, {rate:.0%} reach "
                f"{row['to']} within {window}, against {base:.0%} "
                + ("without a retry" if kind == "loop" else
                   f"for {row['from_channel']} customers who never did it"))  # fmt: skip
    if kind == "outcome":
        return (f"people sent from {row['from']} ({row['from_channel']}) to {row['to']} "
                f"({row['to_channel']}) reach an outcome {rate:.0%} of the time within {window}, "
                f"against {base:.0%} by other routes")  # fmt: skip
    segment = row["segment"]
    return (
        f"{segment['field']} = {segment['value']}: {row['from']} -> {row['to']} converts "
        f"{rate:.0%}, against {base:.0%} for the other values"
    )


def finish(candidates: list[_Candidate], definition: SeamsDefinition,
           notes: list[str]) -> SeamsResult:  # fmt: skip
    p_values = [two_proportion_p(c.x1, c.n1, c.x0, c.n0, c.alternative) for c in candidates]
    q_values = benjamini_hochberg(p_values)
    seams = []
    for c, p, q in zip(candidates, p_values, q_values, strict=True):
        rate = c.x1 / c.n1
        baseline = c.x0 / c.n0
        low, high = wilson(c.x1, c.n1)
        lift = rate / baseline if baseline > 0 else (math.inf if rate > 0 else 1.0)
        sign = 1 if c.alternative == "greater" else -1
        row = {**c.row, "kind": c.kind, "people": c.n1, "followed": c.x1, "rate": rate,
               "baseline_people": c.n0, "baseline_rate": baseline,
               "lift": lift if math.isfinite(lift) else None, "ci_low": low, "ci_high": high,
               "p_value": p, "q_value": q, "significant": q <= definition.alpha,
               # people affected beyond the baseline: extra contacts, or missing outcomes
               "excess": sign * (rate - baseline) * c.n1,
               "people_examples": c.examples}  # fmt: skip
        row["description"] = _describe(c.kind, row)
        if row["significant"] or definition.include_all:
            seams.append(row)
    # ties broken by the labels, so the order never depends on dictionary codes
    seams.sort(key=lambda r: (not r["significant"], -r["excess"], r["q_value"], r["kind"],
                              str(r["from"]), str(r["from_channel"]), str(r["to"]),
                              str(r["to_channel"]), str(r.get("segment"))))
    return SeamsResult({"seams": seams, "candidates": len(candidates),
                        "alpha": definition.alpha, "min_people": definition.min_people,
                        "notes": notes}, "seams")  # fmt: skip


def run_seams(table: pa.Table, definition: SeamsDefinition, as_of: datetime,
              funnels: dict[str, dict[str, Any]] | None = None) -> SeamsResult:  # fmt: skip
    scan = _Scan(table, definition, as_of)
    candidates = scan.costly_candidates() + scan.outcome_candidates()
    notes = []
    if funnels:
        candidates += segment_candidates(funnels, definition.min_people)
        notes.append(MIX_SHIFT_NOTE)
    return finish(candidates, definition, notes)
