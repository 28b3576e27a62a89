"""The journey map: a directly-follows graph over each person's time-ordered touchpoints.

A touchpoint is an event (track, page or screen name) in a lane (its channel, or its
business unit). Each pair of consecutive touchpoints of a person is a transition;
loops (A -> A, a retry) are kept. Per edge: people (distinct persons), transitions,
and the median and 90th percentile of the hand-off time (linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seamline.analytics.definitions import JourneyDefinition
from seamline.analytics.kernels import same_names
from seamline.analytics.result import JourneyResult
from seamline.analytics.sequences import KernelInput, as_arrays

_US = 1_000_000


def _interpolate(low: np.ndarray, high: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Linear interpolation between the order statistics around each group's ``offset``
    ((n - 1) * q): the fraction depends on the group alone, never on where it sits."""
    fraction = offset - np.floor(offset)
    return low / _US * (1 - fraction) + high / _US * fraction


def _edge_quantiles(gaps: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                    qs: tuple[float, ...]) -> list[np.ndarray]:  # fmt: skip
    """Per group (contiguous runs of ``gaps``, in microseconds), the ``qs`` quantiles in
    seconds. A few groups: one ``np.partition`` each, in place (linear time); many: one
    sort."""
    offsets = [(counts - 1) * q for q in qs]
    ranks = [np.floor(o).astype(np.int64) for o in offsets]
    lows = [np.empty(len(counts), dtype=np.int64) for _ in qs]
    highs = [np.empty(len(counts), dtype=np.int64) for _ in qs]
    if len(counts) <= 4096:
        for g, (start, count) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
            wanted = sorted({int(r[g]) for r in ranks} | {min(int(r[g]) + 1, count - 1)
                                                          for r in ranks})  # fmt: skip
            part = gaps[start:start + count]
            part.partition(wanted)
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


@dataclass
class _Piece:
    """One chunk's transitions grouped by edge: its edges, their transitions and people,
    and its gaps in edge order (``bounds``: where each edge's run starts)."""

    edges: np.ndarray
    counts: np.ndarray
    people: np.ndarray
    gaps: np.ndarray
    bounds: np.ndarray


def _piece(person: np.ndarray, ts: np.ndarray, node: np.ndarray, n_nodes: int,
           pairs: np.ndarray) -> _Piece:  # fmt: skip
    """The transitions (``pairs``: rows followed by a row of the same person) of one chunk,
    grouped by edge with one stable sort of the chunk's edge codes (a radix sort below
    65536 codes)."""
    following = pairs + 1
    edge = node[pairs] * node.dtype.type(n_nodes) + node[following]
    gaps = ts[following] - ts[pairs]  # microseconds, >= 0 (rows are in time order)
    owners = person[pairs]
    keys = edge.astype(np.uint16) if n_nodes * n_nodes <= 1 << 16 else edge
    order = np.argsort(keys, kind="stable")
    edge, owners, gaps = edge[order], owners[order], gaps[order]
    bounds = np.flatnonzero(np.concatenate(([len(edge) > 0], edge[1:] != edge[:-1])))
    counts = np.diff(np.append(bounds, len(edge)))
    # distinct people per edge: owners ascend within an edge run, so count the changes
    new_person = np.empty(len(owners), dtype=bool)
    np.not_equal(owners[1:], owners[:-1], out=new_person[1:])
    new_person[bounds] = True
    people = np.add.reduceat(new_person, bounds, dtype=np.int64) if len(bounds) else counts
    return _Piece(edge[bounds], counts, people, gaps, bounds)


def _combine(pieces: list[_Piece]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk's pieces as one: edges (ascending), transitions, people, and the gaps of
    all transitions grouped by edge (edges' runs in that order)."""
    edges_all = np.concatenate([p.edges for p in pieces])
    unique_edges, inverse = np.unique(edges_all, return_inverse=True)
    n = len(unique_edges)
    counts_all = np.concatenate([p.counts for p in pieces])
    counts = np.bincount(inverse, weights=counts_all, minlength=n).astype(np.int64)
    people = np.bincount(inverse, weights=np.concatenate([p.people for p in pieces]),
                         minlength=n).astype(np.int64)  # fmt: skip
    if len(pieces) == 1:
        return unique_edges, counts, people, pieces[0].gaps
    # each piece's runs copied to their edge's place, chunk after chunk: one scatter per
    # piece (its runs land on contiguous stretches), whatever the number of edges
    grouped = np.empty(int(counts.sum()), dtype=np.int64)
    filled = np.cumsum(counts) - counts
    at = 0
    for piece in pieces:
        targets = inverse[at:at + len(piece.edges)]
        at += len(piece.edges)
        shift = filled[targets] - piece.bounds  # where each run goes, minus where it is
        grouped[np.repeat(shift, piece.counts) + np.arange(len(piece.gaps))] = piece.gaps
        filled[targets] += piece.counts
        piece.gaps = grouped[:0]  # free the chunk's copy
    return unique_edges, counts, people, grouped


@dataclass
class JourneyPartial:
    """The journey map of a set of whole persons, before quantiles and labels: its
    transitions grouped by edge (``piece``; None: no transition), per node the people
    starting and ending there, and the people counted. Codes index ``events``/``lanes``."""

    events: list[str | None]
    lanes: list[str | None]
    piece: _Piece | None
    start_tally: np.ndarray
    end_tally: np.ndarray
    people: int


def _merged(pieces: list[_Piece]) -> _Piece | None:
    pieces = [p for p in pieces if len(p.edges)]
    if not pieces:
        return None
    edges, counts, people, gaps = _combine(pieces)
    return _Piece(edges, counts, people, gaps, np.cumsum(counts) - counts)


def journey_partial(table: KernelInput, definition: JourneyDefinition) -> JourneyPartial:
    """The journey map's partial over rows of whole persons sorted by (person, time)."""
    data = as_arrays(table, ("event", "lane"))
    event_names, lane_names = data.text["event"][1], data.text["lane"][1]
    n_lanes = len(lane_names)
    n_nodes = max(len(event_names) * n_lanes, 1)
    # node and edge codes in 32 bits when they fit (half the memory traffic of int64)
    wide = np.int32 if n_nodes * n_nodes < 2**31 else np.int64
    start_code = event_names.index(definition.from_event) if (
        definition.from_event in event_names) else -1  # fmt: skip
    pieces: list[_Piece] = []
    start_tally = np.zeros(n_nodes, dtype=np.int64)
    end_tally = np.zeros(n_nodes, dtype=np.int64)
    n_people = 0
    # chunk by chunk (never splitting a person): each chunk's temporaries stay small
    for chunk in data.chunks():
        person, ts = chunk.person, chunk.ts
        events, lanes = np.asarray(chunk.text["event"][0]), np.asarray(chunk.text["lane"][0])
        node = events.astype(wide, copy=False) * n_lanes + lanes.astype(wide, copy=False)
        if definition.from_event is not None and len(person):
            # each person's journey starts at their first occurrence of from_event
            hit = events == start_code
            boundary = np.concatenate(([True], person[1:] != person[:-1]))
            cumulative = np.cumsum(hit)
            base = np.maximum.accumulate(np.where(boundary, cumulative - hit, 0))
            keep = cumulative - base > 0
            person, ts, node = person[keep], ts[keep], node[keep]
        if not len(person):
            continue
        same = person[1:] == person[:-1]
        pairs = np.flatnonzero(same)
        # each person's last row is a row not followed by a row of the same person
        last = np.append(np.flatnonzero(~same), len(person) - 1)
        first = np.concatenate(([0], last[:-1] + 1))
        start_tally += np.bincount(node[first], minlength=n_nodes)
        end_tally += np.bincount(node[last], minlength=n_nodes)
        n_people += len(first)
        pieces.append(_piece(person, ts, node, n_nodes, pairs))
    return JourneyPartial(list(event_names), list(lane_names), _merged(pieces), start_tally,
                          end_tally, n_people)  # fmt: skip


def merge_journeys(parts: list[JourneyPartial]) -> JourneyPartial:
    """The partials of disjoint sets of persons (coded alike) as one."""
    same_names(parts, "events", "lanes")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return JourneyPartial(
        first.events, first.lanes, _merged([p.piece for p in parts if p.piece is not None]),
        np.sum([p.start_tally for p in parts], axis=0),
        np.sum([p.end_tally for p in parts], axis=0), sum(p.people for p in parts),
    )  # fmt: skip


def run_journeys(table: KernelInput, definition: JourneyDefinition) -> JourneyResult:
    return finish_journeys(journey_partial(table, definition), definition)


def finish_journeys(part: JourneyPartial, definition: JourneyDefinition) -> JourneyResult:
    """Quantiles, labels, the ``min_people``/``top`` cut and the order of the map."""
    event_names, lane_names = part.events, part.lanes
    n_lanes = len(lane_names)
    n_nodes = max(len(event_names) * n_lanes, 1)
    start_tally, end_tally, n_people = part.start_tally, part.end_tally, part.people
    if part.piece is not None:
        unique_edges, counts, people_counts = part.piece.edges, part.piece.counts, part.piece.people
        medians, p90s = _edge_quantiles(part.piece.gaps, part.piece.bounds, counts, (0.5, 0.9))
    else:
        unique_edges = counts = people_counts = medians = p90s = np.zeros(0, dtype=np.int64)
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

    def endpoints(tally: np.ndarray) -> list[dict]:
        codes = np.flatnonzero(tally)
        people = tally[codes]
        out = [{"event": label(c)[0], lane_key: label(c)[1], "people": int(n)}
               for c, n in zip(codes.tolist(), people.tolist(), strict=True)]  # fmt: skip
        return sorted(out, key=lambda e: (-e["people"], str(e["event"]), str(e[lane_key])))

    return JourneyResult(
        {"edges": edges, "starts": endpoints(start_tally), "ends": endpoints(end_tally),
         "people": n_people, "lane": lane_key},
        "edges",
    )  # fmt: skip
