"""Connected components of the identity graph over integer-coded identifiers (NumPy, SciPy).

The batch rebuild hands over, per event, the node of each identifier it carries (``-1`` when
absent). Nodes are numbered so that a smaller number is a stronger identifier: types in
:data:`~seamline.identity.identifiers.ID_TYPES` order, values in text order within a type.
The rules are the batch rebuild's (see :mod:`seamline.store.identity_rebuild`):

- each event links its strongest identifier to each of its other identifiers;
- a non-``user_id`` node linked to two or more different ``user_id`` nodes is a *hub*: it
  links nobody and belongs to no component;
- two ``user_id`` nodes never link directly;
- components are the connected components of the remaining links.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

_NONE = np.iinfo(np.int64).max


@dataclass
class Components:
    label: NDArray[np.int64]  # per node: component number, -1 for hubs
    hub: NDArray[np.bool_]  # per node
    count: int  # components (hubs not counted)


def components(columns: list[NDArray[np.int64]], n_nodes: int, n_user_nodes: int) -> Components:
    """``columns``: per identifier column, the node of every event (``-1`` absent); user-id
    nodes are ``0 .. n_user_nodes - 1``."""
    if not columns or n_nodes == 0:
        return Components(np.zeros(0, np.int64), np.zeros(0, bool), 0)
    top = np.full(len(columns[0]), _NONE, dtype=np.int64)
    for column in columns:
        top = np.minimum(top, np.where(column >= 0, column, _NONE))
    sources, targets = [], []
    for column in columns:
        linked = (column >= 0) & (column != top)
        sources.append(top[linked])
        targets.append(column[linked])
    a = np.concatenate(sources)  # the event's strongest node: a < b on every link
    b = np.concatenate(targets)
    # hubs: non-user nodes whose user neighbours differ (min != max over the links)
    user_user = b < n_user_nodes
    mixed = (a < n_user_nodes) & ~user_user
    other, user = b[mixed], a[mixed]
    low = np.full(n_nodes, _NONE, dtype=np.int64)
    high = np.full(n_nodes, -1, dtype=np.int64)
    np.minimum.at(low, other, user)
    np.maximum.at(high, other, user)
    hub = (high >= 0) & (low != high)
    keep = ~user_user & ~hub[a] & ~hub[b] if hub.any() else ~user_user
    kept = int(keep.sum())
    # CSR with float64 weights and int32 indices: what csgraph works on (no conversions)
    index = np.int32 if n_nodes < 2**31 else np.int64
    graph = csr_matrix((np.ones(kept), (a[keep].astype(index), b[keep].astype(index))),
                       shape=(n_nodes, n_nodes))  # fmt: skip
    count, labels = connected_components(graph, directed=False)
    # renumber densely (in the same order) so hubs' own singleton components vanish
    present = np.zeros(count, dtype=bool)
    present[labels[~hub]] = True
    dense = np.cumsum(present, dtype=np.int64) - 1
    labels = np.where(hub, -1, dense[labels])
    return Components(labels, hub, int(present.sum()))
