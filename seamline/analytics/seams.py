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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from seamline.analytics.durations import format_duration
from seamline.analytics.kernels import same_names
from seamline.analytics.result import Result
from seamline.analytics.sequences import (
    DictionaryIds,
    KernelInput,
    SequenceArrays,
    as_arrays,
)
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
    if not in_row_order:
        return rows[order[new]]
    is_first = np.zeros(len(rows), dtype=bool)  # back in row order without a sort
    is_first[order[new]] = True
    return rows[is_first]


def _entries_of(person: NDArray[Any], entry: NDArray[np.int64], entry_lanes: NDArray[Any],
                did: NDArray[np.int64], did_lanes: NDArray[Any], n_lanes: int
                ) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:  # fmt: skip
    """For each row of ``did`` (a person's touchpoint), whether its person has an entry row
    in that lane, and the position in ``entry`` of that entry (for the rows that have one).
    Entries are unique per (person, lane) and rows of ``did``: a dense table over the
    chunk's persons when it is small, else a binary search."""
    if not len(did):
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    low = int(person[did].min())
    entry_key = (person[entry].astype(np.int64) - low) * n_lanes + entry_lanes
    did_key = (person[did].astype(np.int64) - low) * n_lanes + did_lanes
    size = int(did_key.max()) + 1
    if size <= 1 << 22:
        slot = np.full(size, -1, dtype=np.int64)
        slot[entry_key] = np.arange(len(entry_key))
        found = slot[did_key]
        has_entry = found >= 0
        return has_entry, found[has_entry]
    order = np.argsort(entry_key)
    at = np.searchsorted(entry_key[order], did_key)
    has_entry = at < len(order)
    has_entry[has_entry] = entry_key[order][at[has_entry]] == did_key[has_entry]
    return has_entry, order[at[has_entry]]


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


@dataclass
class _LaneSums:
    """Per costly channel: sums over chunks that depend on reaching that channel."""

    followed: NDArray[np.float64]  # per touchpoint: first occurrences followed by a contact
    loop_followed: NDArray[np.float64]  # ... of those retried at once
    entry_followed: NDArray[np.float64]  # per channel: entries followed by a contact
    did_followed: NDArray[np.float64]  # per touchpoint: entries of its doers, followed


class _Scan:
    """One pass over the sequences, chunk by chunk (a chunk never splits a person): every
    candidate's counts are sums over persons, so each chunk adds its share."""

    def __init__(self, event_names: list[str | None], lane_names: list[str | None],
                 definition: SeamsDefinition, as_of: datetime):  # fmt: skip
        self.event_names = event_names
        self.lane_names = lane_names
        # person code -> id while scanning; None once the examples hold ids (:meth:`portable`)
        self.ids: Sequence[str] | None = []
        self.n_lanes = len(self.lane_names)
        self.n_nodes = max(len(self.event_names) * self.n_lanes, 1)
        self.definition = definition
        self.as_of = int((as_of - datetime(1970, 1, 1)).total_seconds() * _US)
        # code -> flag tables, then one lookup per row (np.isin would sort)
        self.costly_events = np.array([e in definition.costly_events for e in self.event_names],
                                      dtype=bool)  # fmt: skip
        self.costly_lanes = np.array([c in definition.costly_channels for c in self.lane_names],
                                     dtype=bool)  # fmt: skip
        self.outcomes = np.array([e in definition.outcome_events for e in self.event_names],
                                 dtype=bool)  # fmt: skip
        n_nodes, n_lanes = self.n_nodes, self.n_lanes
        self.first_n = np.zeros(n_nodes, dtype=np.int64)  # people with a closed first A
        self.loop_n = np.zeros(n_nodes, dtype=np.int64)  # ... who retried A at once
        self.entry_n = np.zeros(n_lanes, dtype=np.int64)  # people entering each channel
        self.did_n = np.zeros(n_nodes, dtype=np.int64)  # entries of people who did A
        self.lanes: dict[int, _LaneSums] = {}
        self.pair_n: dict[int, int] = {}  # hand-offs per (from, to) pair, and outcomes
        self.pair_x: dict[int, int] = {}
        self.pair_tally: NDArray[np.int64] | None = None  # the same, dense, when small
        self.from_n = np.zeros(n_nodes, dtype=np.int64)
        self.from_x = np.zeros(n_nodes, dtype=np.int64)
        # the first people (in person order) behind each possible candidate, collected as
        # the chunks go by (persons ascend from chunk to chunk) until there are enough
        self.people: dict[tuple[str, int, int], list[Any]] = {}
        self.enough: dict[tuple[str, int], NDArray[np.bool_]] = {}

    def scan(self, data: SequenceArrays) -> _Scan:
        """Adds rows of whole persons (``data``, coded like this scan's names), chunk by
        chunk; persons must ascend across calls, or the scans be merged (:meth:`merge`)."""
        self.ids = DictionaryIds(data.person_ids) if data.person_ids is not None else []
        for chunk in data.chunks():
            if len(chunk):
                self._add(chunk)
        return self

    def portable(self) -> _Scan:
        """The scan without references to its input: the examples as person ids."""
        if self.ids is not None:
            ids = self.ids
            self.people = {key: [ids[int(p)] for p in found]
                           for key, found in self.people.items()}  # fmt: skip
            self.ids = None
        self.enough = {}
        return self

    @staticmethod
    def merge(scans: list[_Scan]) -> _Scan:
        """The scans of disjoint sets of persons (coded alike) as one; the examples are
        the first people by id of all of them (each scan's are its first by id)."""
        same_names(scans, "event_names", "lane_names")
        out = scans[0].portable()
        for other in scans[1:]:
            other.portable()
            for name in ("first_n", "loop_n", "entry_n", "did_n", "from_n", "from_x"):
                setattr(out, name, getattr(out, name) + getattr(other, name))
            for lane_code, sums in other.lanes.items():
                mine = out.lanes.get(lane_code)
                if mine is None:
                    out.lanes[lane_code] = sums
                    continue
                for name in ("followed", "loop_followed", "entry_followed", "did_followed"):
                    setattr(mine, name, getattr(mine, name) + getattr(sums, name))
            for code, count in other.pair_n.items():
                out.pair_n[code] = out.pair_n.get(code, 0) + count
            for code, hits in other.pair_x.items():
                out.pair_x[code] = out.pair_x.get(code, 0) + hits
            if other.pair_tally is not None:
                out.pair_tally = other.pair_tally if out.pair_tally is None else (
                    out.pair_tally + other.pair_tally)  # fmt: skip
            for key, found in other.people.items():
                out.people[key] = out.people.get(key, []) + found
        if len(scans) > 1:
            wanted = out.definition.people_examples
            out.people = {key: sorted(found)[:wanted] for key, found in out.people.items()}
        return out

    def label(self, node: int) -> tuple[str | None, str | None]:
        return self.event_names[node // self.n_lanes], self.lane_names[node % self.n_lanes]

    def candidates(self) -> list[_Candidate]:
        return self.costly_candidates() + self.outcome_candidates()

    def _add(self, chunk: SequenceArrays) -> None:
        d = self.definition
        events = np.asarray(chunk.text["event"][0])
        lanes = np.asarray(chunk.text["lane"][0])
        person, ts = chunk.person, chunk.ts
        n = len(person)
        wide = np.int32 if self.n_nodes < 2**31 else np.int64
        node = events.astype(wide) * self.n_lanes + lanes.astype(wide)
        costly = self.costly_events[events] | self.costly_lanes[lanes]
        window = int(d.within.total_seconds() * _US)
        closed = ts <= self.as_of - window
        # who did each touchpoint at all (open windows too), to keep them out of its
        # baseline: each person's first row of each touchpoint, in row order
        touched = np.flatnonzero(~costly)
        did_rows = _first_per(person[touched], node[touched], touched, self.n_nodes)
        # the first occurrences that count: rows are in time order per person, so a
        # touchpoint's first row is closed when any of its rows is
        first = did_rows[closed[did_rows]]
        # a person's first row in a channel is the first row of one of its touchpoints
        entry_index = _first_per(person[first], lanes[first], np.arange(len(first)),
                                 self.n_lanes, in_row_order=False)  # fmt: skip
        entry = first[entry_index]
        did_node = node[did_rows]
        has_entry, hit = _entries_of(person, entry, lanes[entry], did_rows,
                                     did_node % self.n_lanes, self.n_lanes)  # fmt: skip
        did_node = did_node[has_entry]

        first_node, first_person, first_ts = node[first], person[first], ts[first]
        following = np.minimum(first + 1, max(n - 1, 0))
        retried = (first + 1 < n) & (person[following] == first_person) & (
            node[following] == first_node)  # fmt: skip
        entry_lanes = lanes[entry]
        self.first_n += np.bincount(first_node, minlength=self.n_nodes)
        self.loop_n += np.bincount(first_node[retried], minlength=self.n_nodes)
        self.entry_n += np.bincount(entry_lanes, minlength=self.n_lanes)
        self.did_n += np.bincount(did_node, minlength=self.n_nodes)
        contact_lanes = np.bincount(lanes[costly], minlength=self.n_lanes)
        for lane_code in np.flatnonzero(contact_lanes).tolist():
            nxt, found = _next_of(costly & (lanes == lane_code))
            # whether each row of ``first`` reaches the contact within T (only those count)
            after = nxt[first]
            followed = found[first] & (person[after] == first_person) & (
                ts[after] - first_ts <= window)  # fmt: skip
            entry_followed = followed[entry_index]
            sums = self.lanes.get(lane_code)
            if sums is None:
                sums = self.lanes[lane_code] = _LaneSums(
                    np.zeros(self.n_nodes), np.zeros(self.n_nodes), np.zeros(self.n_lanes),
                    np.zeros(self.n_nodes))  # fmt: skip
            sums.followed += np.bincount(first_node, weights=followed, minlength=self.n_nodes)
            sums.loop_followed += np.bincount(first_node[retried], weights=followed[retried],
                                              minlength=self.n_nodes)  # fmt: skip
            sums.entry_followed += np.bincount(entry_lanes, weights=entry_followed,
                                               minlength=self.n_lanes)  # fmt: skip
            sums.did_followed += np.bincount(did_node, weights=entry_followed[hit],
                                             minlength=self.n_nodes)  # fmt: skip
            self._collect(("costly_contact", lane_code), first_node[followed],
                          first_person[followed], self.n_nodes)  # fmt: skip
            looped = followed & retried
            self._collect(("loop", lane_code), first_node[looped], first_person[looped],
                          self.n_nodes)  # fmt: skip
        self._moves(person, ts, node, events)

    def _moves(self, person: NDArray[Any], ts: NDArray[np.int64], node: NDArray[Any],
               events: NDArray[Any]) -> None:  # fmt: skip
        """Each person's first hand-off from each touchpoint (to the next touchpoint within
        T), and whether an outcome followed within the outcome window; tallied."""
        d = self.definition
        if not d.outcome_events or len(person) < 2:
            return
        outcome = self.outcomes[events]
        window = int(d.outcome_within.total_seconds() * _US)
        # a hand-off is the person's next touchpoint within T (a later touchpoint, such as a
        # campaign email days after a session, is not a route taken from this point)
        handoff = int(d.within.total_seconds() * _US)
        moves = (person[1:] == person[:-1]) & ~outcome[:-1] & (ts[:-1] <= self.as_of - window)
        moves &= ts[1:] - ts[:-1] <= handoff
        rows = np.flatnonzero(moves)
        nxt, found = _next_of(outcome)  # the first outcome strictly after each row
        reach, found = nxt[rows], found[rows]
        reached = found & (person[reach] == person[rows]) & (ts[reach] - ts[rows] <= window)
        keep = _first_per(person[rows], node[rows], np.arange(len(rows)), self.n_nodes)
        rows, reached = rows[keep], reached[keep]
        from_node, to_node = node[rows], node[rows + 1]
        pair = from_node.astype(np.int64) * self.n_nodes + to_node
        if self.n_nodes * self.n_nodes <= 1 << 20:  # a dense tally of every (from, to)
            n_pairs = self.n_nodes * self.n_nodes
            if self.pair_tally is None:
                self.pair_tally = np.zeros((2, n_pairs), dtype=np.int64)
            self.pair_tally[0] += np.bincount(pair, minlength=n_pairs)
            self.pair_tally[1] += np.bincount(pair, weights=reached,
                                              minlength=n_pairs).astype(np.int64)  # fmt: skip
        else:
            pairs, pair_n = np.unique(pair, return_counts=True)
            pair_x = np.bincount(np.searchsorted(pairs, pair), weights=reached,
                                 minlength=len(pairs)).astype(np.int64)  # fmt: skip
            for code, count, hits in zip(pairs.tolist(), pair_n.tolist(), pair_x.tolist(),
                                         strict=True):  # fmt: skip
                self.pair_n[code] = self.pair_n.get(code, 0) + count
                self.pair_x[code] = self.pair_x.get(code, 0) + hits
        self.from_n += np.bincount(from_node, minlength=self.n_nodes)
        self.from_x += np.bincount(from_node, weights=reached,
                                   minlength=self.n_nodes).astype(np.int64)  # fmt: skip
        missed = ~reached
        self._collect(("outcome", 0), pair[missed], person[rows][missed],
                      self.n_nodes * self.n_nodes)  # fmt: skip

    def _collect(self, kind: tuple[str, int], codes: NDArray[Any], persons: NDArray[Any],
                 n_codes: int) -> None:  # fmt: skip
        """Adds one chunk's people (in row order, so ascending) to the examples of each
        code of ``kind``, for the codes that still have fewer than wanted."""
        wanted = self.definition.people_examples
        enough = self.enough.get(kind)
        if enough is None:
            enough = self.enough[kind] = np.zeros(n_codes if n_codes <= 1 << 24 else 0,
                                                  dtype=bool)  # fmt: skip
        if len(enough):
            missing = ~enough[codes]
            codes, persons = codes[missing], persons[missing]
        if not len(codes) or not wanted:
            return
        order = np.argsort(codes, kind="stable")  # row order (person order) kept per code
        codes, persons = codes[order], persons[order]
        starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
        for start, code in zip(starts.tolist(), codes[starts].tolist(), strict=True):
            found = self.people.setdefault((kind[0], kind[1], code), [])
            if len(found) >= wanted:
                continue
            more = persons[start:start + wanted - len(found)]
            found += more[codes[start:start + len(more)] == code].tolist()
            if len(found) >= wanted and len(enough):
                enough[code] = True

    def examples(self, kind: str, lane_code: int, code: int) -> list[str]:
        """The ids of the first people behind a candidate (in person order)."""
        found = self.people.get((kind, lane_code, code), [])
        if self.ids is None:
            return list(found)
        return [self.ids[int(p)] for p in found]

    def costly_candidates(self) -> list[_Candidate]:
        d = self.definition
        out: list[_Candidate] = []
        node_codes = np.flatnonzero(self.first_n).tolist()
        for lane_code in sorted(self.lanes):
            sums = self.lanes[lane_code]
            to_label = f"any {self.lane_names[lane_code]} contact"
            for code in node_codes:
                event, lane = self.label(code)
                n1, x1 = int(self.first_n[code]), int(sums.followed[code])
                lane_index = code % self.n_lanes
                n0 = int(self.entry_n[lane_index] - self.did_n[code])
                x0 = int(sums.entry_followed[lane_index] - sums.did_followed[code])
                base = {"from": event, "from_channel": lane, "to": to_label,
                        "to_channel": self.lane_names[lane_code],
                        "within_seconds": d.within.total_seconds()}  # fmt: skip
                # a baseline where nobody ever reaches the contact is not comparable (often
                # people who cannot be linked to contacts at all): no candidate
                if n1 >= d.min_people and n0 >= d.min_people and x1 >= d.min_followed and x0 > 0:
                    out.append(_Candidate(
                        "costly_contact", dict(base), x1, n1, x0, n0, "greater",
                        self.examples("costly_contact", lane_code, code),
                    ))  # fmt: skip
                loop_n, loop_hits = int(self.loop_n[code]), int(sums.loop_followed[code])
                plain_n = n1 - loop_n
                if (loop_n >= d.min_people and plain_n >= d.min_people
                        and loop_hits >= d.min_followed):  # fmt: skip
                    out.append(_Candidate(
                        "loop", {**base, "from": f"{event} (retried)"},
                        loop_hits, loop_n, x1 - loop_hits, plain_n, "greater",
                        self.examples("loop", lane_code, code),
                    ))  # fmt: skip
        return out

    def outcome_candidates(self) -> list[_Candidate]:
        d = self.definition
        out = []
        if self.pair_tally is not None:
            codes = np.flatnonzero(self.pair_tally[0])
            self.pair_n = dict(zip(codes.tolist(), self.pair_tally[0][codes].tolist(),
                                   strict=True))  # fmt: skip
            self.pair_x = dict(zip(codes.tolist(), self.pair_tally[1][codes].tolist(),
                                   strict=True))  # fmt: skip
        for code in sorted(self.pair_n):
            a, b = code // self.n_nodes, code % self.n_nodes
            if a % self.n_lanes == b % self.n_lanes:
                continue  # only hand-offs between channels
            n1, x1 = self.pair_n[code], self.pair_x[code]
            n0, x0 = int(self.from_n[a]) - n1, int(self.from_x[a]) - x1
            if n1 < d.min_people or n0 < d.min_people:
                continue
            (fe, fl), (te, tl) = self.label(a), self.label(b)
            out.append(_Candidate(
                "outcome",
                {"from": fe, "from_channel": fl, "to": te, "to_channel": tl,
                 "within_seconds": d.outcome_within.total_seconds(),
                 "outcomes": list(d.outcome_events)},
                x1, n1, x0, n0, "less",
                self.examples("outcome", 0, code),
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


def seams_partial(table: KernelInput, definition: SeamsDefinition, as_of: datetime) -> _Scan:
    """The seams' partial (every candidate's sums) over rows of whole persons sorted by
    (person, time)."""
    data = as_arrays(table, ("event", "lane"), keep_ids=True)
    scan = _Scan(list(data.text["event"][1]), list(data.text["lane"][1]), definition, as_of)
    return scan.scan(data)


def merge_seams(parts: list[_Scan]) -> _Scan:
    """The partials of disjoint sets of persons (coded alike) as one."""
    return _Scan.merge(parts)


def finish_seams(part: _Scan, definition: SeamsDefinition,
                 funnels: dict[str, dict[str, Any]] | None = None) -> SeamsResult:  # fmt: skip
    """The candidates of the sums (and of the funnels' segments), tested and ranked."""
    candidates = part.candidates()
    notes = []
    if funnels:
        candidates += segment_candidates(funnels, definition.min_people)
        notes.append(MIX_SHIFT_NOTE)
    return finish(candidates, definition, notes)


def run_seams(table: KernelInput, definition: SeamsDefinition, as_of: datetime,
              funnels: dict[str, dict[str, Any]] | None = None) -> SeamsResult:  # fmt: skip
    return finish_seams(seams_partial(table, definition, as_of), definition, funnels)
