"""The journey map: a directly-follows graph over each person's time-ordered touchpoints.

A touchpoint is an event (track, page or screen name) in a lane (its channel, or its
business unit). Each pair of consecutive touchpoints of a person is a transition;
loops (A -> A, a retry) are kept. Per edge: people (distinct persons), transitions,
and the median and 90th percentile of the hand-off time (linear interpolation).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from seamline.analytics.definitions import JourneyDefinition
from seamline.analytics.result import JourneyResult
from seamline.analytics.sequences import dictionary, distinct, from_table

_US = 1_000_000


def _interpolate(low: np.ndarray, high: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Linear interpolation between the order statistics around each group's ``offset``
    ((n - 1) * q): the fraction depends on the group alone, never on where it sits."""
    fraction = offset - np.floor(offset)
    return low / _US * (1 - fraction) + high / _US * fraction


def _edge_quantiles(gaps: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                    qs: tuple[float, ...]) -> list[np.ndarray]:  # fmt: skip
    """Per group (contiguous runs of ``gaps``, in microseconds), the ``qs`` quantiles in
    seconds. A few groups: one ``np.partition`` each (linear time); many: one sort."""
    offsets = [(counts - 1) * q for q in qs]
    ranks = [np.floor(o).astype(np.int64) for o in offsets]
    lows = [np.empty(len(counts), dtype=np.int64) for _ in qs]
    highs = [np.empty(len(counts), dtype=np.int64) for _ in qs]
    if len(counts) <= 4096:
        for g, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            wanted = sorted({int(r[g]) for r in ranks} | {min(int(r[g]) + 1, count - 1)
                                                          for r in ranks})  # fmt: skip
            part = np.partition(gaps[start:start + count], wanted)
            for i, r in enumerate(ranks):
                lows[i][g] = part[r[g]]
                highs[i][g] = part[min(r[g] + 1, count - 1)]
    else:
        group = np.repeat(np.arange(len(counts)), counts)
        ordered = gaps[np.lexsort((gaps, group))]
        for i, r in enumerate(ranks):
            lows[i] = ordered[starts + r]
            highs[i] = ordered[starts + np.minimum(r + 1, counts - 1)]
    return [_interpolate(lows[i], highs[i], offsets[i]) for i in range(len(qs))]


def run_journeys(table: pa.Table, definition: JourneyDefinition) -> JourneyResult:
    seq = from_table(table)
    person, ts = seq.person, seq.ts
    events, event_names = dictionary(table, "event")
    lanes, lane_names = dictionary(table, "lane")
    n_lanes = len(lane_names)
    node = events * n_lanes + lanes
    if definition.from_event is not None:
        # each person's journey starts at their first occurrence of from_event
        start_code = event_names.index(definition.from_event) if (
            definition.from_event in event_names) else -1  # fmt: skip
        hit = events == start_code
        seen = np.zeros(len(person), dtype=np.int64)
        if len(person):
            boundary = np.concatenate(([True], person[1:] != person[:-1]))
            cumulative = np.cumsum(hit)
            base = np.maximum.accumulate(np.where(boundary, cumulative - hit, 0))
            seen = cumulative - base
        keep = seen > 0
        person, ts, node = person[keep], ts[keep], node[keep]

    same = person[1:] == person[:-1] if len(person) else np.zeros(0, dtype=bool)
    n_nodes = max(int(node.max()) + 1, 1) if len(node) else 1
    # one edge code per consecutive pair, computed before selecting the pairs of one person
    wide = np.int32 if n_nodes * n_nodes < 2**31 else np.int64
    node = node.astype(wide, copy=False)
    edge = (node[:-1] * wide(n_nodes) + node[1:])[same] if len(node) else node
    gaps = (ts[1:] - ts[:-1])[same]  # microseconds
    owners = person[:-1][same]
    # group the transitions by edge with one stable sort of small compact codes (a radix
    # sort for < 65536 edges): rows stay in person order inside each edge
    if n_nodes * n_nodes <= 1 << 24:
        present = np.bincount(edge, minlength=n_nodes * n_nodes)
        unique_edges = np.flatnonzero(present)
        small = np.uint16 if len(unique_edges) <= 1 << 16 else np.int64
        lookup = np.zeros(n_nodes * n_nodes, dtype=small)
        lookup[unique_edges] = np.arange(len(unique_edges))
        compact = lookup[edge]
        counts = present[unique_edges]
    else:  # millions of touchpoint kinds: compact codes by sorting
        unique_edges = distinct(edge.astype(np.int64))
        compact = np.searchsorted(unique_edges, edge)
        counts = np.bincount(compact, minlength=len(unique_edges))
    order = np.argsort(compact, kind="stable")
    starts = np.cumsum(counts) - counts
    gaps_sorted, owners_sorted = gaps[order], owners[order]
    # distinct people per edge: owners ascend within an edge, so count the changes
    new_person = np.empty(len(owners_sorted), dtype=np.int8)
    if len(owners_sorted):
        new_person[0] = 1
        np.not_equal(owners_sorted[1:], owners_sorted[:-1], out=new_person[1:], casting="unsafe")
    new_person[starts] = 1
    running = np.cumsum(new_person, dtype=np.int64)
    people_counts = running[starts + counts - 1] - running[starts] + 1 if len(starts) else counts
    medians, p90s = _edge_quantiles(gaps_sorted, starts, counts, (0.5, 0.9)) if len(
        counts) else (counts, counts)  # fmt: skip
    people_of = dict(zip(unique_edges.tolist(), people_counts.tolist(), strict=True))

    def label(code: int) -> tuple[str | None, str | None]:
        return event_names[code // n_lanes], lane_names[code % n_lanes]

    lane_key = definition.by
    edges = []
    for i, code in enumerate(unique_edges.tolist()):
        people = people_of[code]
        if people < definition.min_people:
            continue
        (from_event, from_lane), (to_event, to_lane) = label(code // n_nodes), label(code % n_nodes)
        edges.append({
            "from": from_event, "to": to_event,
            f"from_{lane_key}": from_lane, f"to_{lane_key}": to_lane,
            "people": people, "transitions": int(counts[i]),
            "median_seconds": float(medians[i]), "p90_seconds": float(p90s[i]),
        })  # fmt: skip
    # ties broken by every label, so the order never depends on dictionary codes
    edges.sort(key=lambda e: (-e["people"], -e["transitions"], str(e["from"]), str(e["to"]),
                              str(e[f"from_{lane_key}"]), str(e[f"to_{lane_key}"])))
    if definition.top is not None:
        edges = edges[: definition.top]

    def endpoints(rows: np.ndarray) -> list[dict]:
        tally = np.bincount(node[rows], minlength=n_nodes)
        codes = np.flatnonzero(tally)
        people = tally[codes]
        out = [{"event": label(c)[0], lane_key: label(c)[1], "people": int(n)}
               for c, n in zip(codes.tolist(), people.tolist(), strict=True)]  # fmt: skip
        return sorted(out, key=lambda e: (-e["people"], str(e["event"]), str(e[lane_key])))

    if len(person):
        first = np.concatenate(([True], person[1:] != person[:-1]))
        last = np.concatenate((person[1:] != person[:-1], [True]))
        starts_list, ends_list = endpoints(np.flatnonzero(first)), endpoints(np.flatnonzero(last))
    else:
        starts_list, ends_list = [], []
    return JourneyResult(
        {"edges": edges, "starts": starts_list, "ends": ends_list,
         "people": int(np.count_nonzero(first)) if len(person) else 0, "lane": lane_key},
        "edges",
    )  # fmt: skip
