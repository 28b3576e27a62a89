"""Top paths after (or before) an anchor event, over sorted per-person touchpoints.

Semantics (see the README's "Paths"):
- touchpoints are track, page and screen calls, named by their event (page/screen name);
- each person is anchored at their *first* occurrence of the event (in the date range);
  people who never did it are not counted;
- the path is the anchor plus the next ``steps`` touchpoints (``after``) or the anchor
  preceded by the ``steps`` touchpoints before it (``before``), in time order; a person
  with fewer touchpoints on that side contributes the shorter path;
- with ``collapse_repeats`` a run of the same event counts once (A, A, B -> A, B), applied
  to the whole sequence before anchoring, so the first occurrence is unchanged;
- every person has exactly one path; ``people`` per path and ``share`` of all anchored
  people; the top paths by people (ties: alphabetical by path).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seamline.analytics.definitions import PathDefinition
from seamline.analytics.kernels import same_names
from seamline.analytics.result import PathResult
from seamline.analytics.sequences import KernelInput, dictionary, from_table

_PAD = -1  # no touchpoint at this position (the person's sequence ended)


@dataclass
class PathPartial:
    """The distinct paths (rows of event codes indexing ``names``, padded with -1) of a
    set of whole persons, the people per path, and the people anchored."""

    names: list[str | None]
    paths: np.ndarray
    people: np.ndarray
    total: int


def path_partial(table: KernelInput, definition: PathDefinition) -> PathPartial:
    """The paths' partial over rows of whole persons sorted by (person, time)."""
    person = from_table(table).person
    codes, names = dictionary(table, "event")
    if definition.collapse_repeats and len(codes):
        keep = np.ones(len(codes), dtype=bool)
        keep[1:] = (person[1:] != person[:-1]) | (codes[1:] != codes[:-1])
        person, codes = person[keep], codes[keep]

    hits = np.flatnonzero(codes == names.index(definition.event)) if (
        definition.event in names) else np.zeros(0, dtype=np.int64)  # fmt: skip
    _, first = np.unique(person[hits], return_index=True)
    anchors = hits[first]  # each person's first occurrence

    k = definition.steps
    offsets = np.arange(k + 1) if definition.direction == "after" else np.arange(-k, 1)
    rows = anchors[:, None] + offsets[None, :]
    inside = (rows >= 0) & (rows < len(codes))
    rows = np.clip(rows, 0, max(len(codes) - 1, 0))
    same_person = person[rows] == person[anchors][:, None] if len(anchors) else inside
    matrix = np.where(inside & same_person, codes[rows] if len(codes) else rows, _PAD)

    total = len(anchors)
    if not total:
        return PathPartial(list(names), np.zeros((0, k + 1), dtype=np.int64),
                           np.zeros(0, dtype=np.int64), 0)  # fmt: skip
    unique_paths, people = np.unique(matrix, axis=0, return_counts=True)
    return PathPartial(list(names), unique_paths.astype(np.int64), people.astype(np.int64), total)


def merge_paths(parts: list[PathPartial]) -> PathPartial:
    """The partials of disjoint sets of persons (coded alike) as one."""
    same_names(parts, "names")
    if len(parts) == 1:
        return parts[0]
    total = sum(p.total for p in parts)
    every = np.concatenate([p.paths for p in parts])
    if not len(every):
        return PathPartial(parts[0].names, every, np.zeros(0, dtype=np.int64), total)
    unique_paths, inverse = np.unique(every, axis=0, return_inverse=True)
    people = np.bincount(inverse.ravel(), weights=np.concatenate([p.people for p in parts]),
                         minlength=len(unique_paths)).astype(np.int64)  # fmt: skip
    return PathPartial(parts[0].names, unique_paths, people, total)


def run_paths(table: KernelInput, definition: PathDefinition) -> PathResult:
    return finish_paths(path_partial(table, definition), definition)


def finish_paths(part: PathPartial, definition: PathDefinition) -> PathResult:
    """Labels, shares and the top paths."""
    names, total = part.names, part.total
    paths: list[dict] = []
    for row, count in zip(part.paths.tolist(), part.people.tolist(), strict=True):
        path = [names[c] for c in row if c != _PAD]
        paths.append({"path": path, "people": int(count), "share": count / total})
    paths.sort(key=lambda p: (-p["people"], [str(step) for step in p["path"]]))
    return PathResult(
        {"event": definition.event, "direction": definition.direction,
         "steps": definition.steps, "collapse_repeats": definition.collapse_repeats,
         "paths": paths[: definition.top], "people": total, "distinct_paths": len(paths)},
        "paths",
    )  # fmt: skip
