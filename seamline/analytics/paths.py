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

import numpy as np
import pyarrow as pa

from seamline.analytics.definitions import PathDefinition
from seamline.analytics.result import PathResult
from seamline.analytics.sequences import dictionary, from_table

_PAD = -1  # no touchpoint at this position (the person's sequence ended)


def run_paths(table: pa.Table, definition: PathDefinition) -> PathResult:
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
    paths: list[dict] = []
    if total:
        unique_paths, people = np.unique(matrix, axis=0, return_counts=True)
        for row, count in zip(unique_paths.tolist(), people.tolist(), strict=True):
            path = [names[c] for c in row if c != _PAD]
            paths.append({"path": path, "people": int(count), "share": count / total})
    paths.sort(key=lambda p: (-p["people"], [str(step) for step in p["path"]]))
    return PathResult(
        {"event": definition.event, "direction": definition.direction,
         "steps": definition.steps, "collapse_repeats": definition.collapse_repeats,
         "paths": paths[: definition.top], "people": total, "distinct_paths": len(paths)},
        "paths",
    )  # fmt: skip
