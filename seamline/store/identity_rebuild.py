"""The batch identity rebuild: one scan of the events, integer-coded identifiers, SciPy
connected components, and a comparison with the incremental person map.

Same rules and the same report as the recursive-SQL :func:`seamline.store.identity.rebuild`
(kept as the reference; a test checks they agree), about an order of magnitude faster:

1. one DuckDB scan reads each event's identifiers from plain columns: ids as stored
   (trimmed at ingest), the normalised ``contact_email`` / ``contact_phone`` the identity
   service stored with the event (:mod:`seamline.store.contacts`: no JSON, no
   libphonenumber), an alias's previous id;
2. Arrow dictionary-encodes each identifier column; placeholder values are dropped by the
   same SQL test over the *distinct* values only (so a value blocked since ingest drops out);
3. :func:`seamline.identity.components.components` finds hubs and components in NumPy/SciPy;
4. the incremental map (``identities``) is joined by node code to count disagreements.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from seamline.identity.components import components
from seamline.identity.identifiers import ID_TYPES

# Event identifiers, one column each, with the incremental path's rules; DISTINCT because
# events carrying the same identifiers add the same links (most of a person's events do).
# User, anonymous and previous ids are stored trimmed (seamline.events.fast.identifier),
# device ids as sent; emails and phones are stored
# normalised (seamline.store.contacts), so no JSON is parsed here.
_SCAN = """
SELECT DISTINCT user_id, contact_email AS email, contact_phone AS phone,
       trim(device_id) AS device_id, anonymous_id,
       CASE WHEN type = 'alias' THEN previous_id END AS previous_id
FROM events
"""
TYPES = ID_TYPES  # priority order: the strongest first


def _kept(values: pa.Array, blocked: pa.Array) -> NDArray[np.bool_]:
    """Which distinct values survive the placeholder test (not empty, not blocked): the
    test of :meth:`seamline.identity.identifiers.IdentityRules.is_blocked` in Arrow kernels
    (trimmed, quotes stripped, lower case; in the list or only zeros and dashes)."""
    folded = pc.utf8_lower(pc.utf8_trim(pc.utf8_trim_whitespace(values), characters="\"'"))
    bad = pc.or_(pc.is_in(folded, value_set=blocked),
                 pc.match_substring_regex(folded, r"^[0\-]*$"))  # fmt: skip
    return np.asarray(pc.invert(bad).fill_null(False).to_numpy(zero_copy_only=False), bool)


def _number(values: pa.Array, codes: NDArray[np.int64], blocked: pa.Array,
            text_order: bool) -> tuple[pa.Array, NDArray[np.int64]]:  # fmt: skip
    """Distinct ``values`` (already unique) that are referenced and kept (in text order if
    asked), and the node number of each value (-1 when dropped)."""
    referenced = np.bincount(codes[codes >= 0], minlength=len(values)) > 0
    kept = _kept(values, blocked)
    order = (pc.sort_indices(values).to_numpy() if text_order
             else np.arange(len(values), dtype=np.int64))  # fmt: skip
    keep_sorted = (referenced & kept)[order]
    code_map = np.full(len(values), -1, dtype=np.int64)
    code_map[order] = np.where(keep_sorted, np.cumsum(keep_sorted) - 1, -1)
    return values.take(pa.array(order[keep_sorted])), code_map


def _encode(column: pa.ChunkedArray | pa.Array) -> tuple[NDArray[np.int64], pa.Array]:
    """Codes per row (-1 for null) and the distinct values."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def rebuild(con: duckdb.DuckDBPyConnection, blocked: list[str]) -> dict[str, Any]:
    """Connected components over every stored identifier; a report against ``identities``."""
    blocked_values = pa.array(blocked, pa.string())
    scan = con.sql(_SCAN).to_arrow_table()
    names = (*TYPES, "previous_id")
    # Arrow kernels release the GIL: encode the columns on both cores
    with ThreadPoolExecutor(max_workers=2) as pool:
        encoded = list(pool.map(_encode, (scan.column(name) for name in names)))
    raw: dict[str, tuple[NDArray[np.int64], pa.Array]] = dict(zip(names, encoded, strict=True))
    del scan
    # an alias's previous id is a user id if it is one, else an anonymous id
    prev_codes, prev_values = raw.pop("previous_id")
    is_user = pc.is_in(prev_values, value_set=raw["user_id"][1]).to_numpy(zero_copy_only=False)
    prev_is_user = np.zeros(len(prev_codes), dtype=bool)
    prev_is_user[prev_codes >= 0] = is_user[prev_codes[prev_codes >= 0]]

    # final nodes per type: distinct kept values in text order, numbered by priority
    per_type: dict[str, list[tuple[NDArray[np.int64], pa.Array]]] = {t: [raw[t]] for t in TYPES}
    per_type["user_id"].append((np.where(prev_is_user, prev_codes, -1), prev_values))
    per_type["anonymous_id"].append((np.where(prev_is_user, -1, prev_codes), prev_values))
    offset = 0
    columns: list[NDArray[np.int64]] = []
    node_values: list[pa.Array] = []
    node_types: list[str] = []
    dictionaries: dict[str, pa.Array] = {}
    for id_type in TYPES:
        parts = [(c, v) for c, v in per_type[id_type] if bool((c >= 0).any())]
        if len(parts) <= 1:  # the common case: one distinct source
            codes, values = parts[0] if parts else per_type[id_type][0]
            # text order decides ties only between two user ids of one event (an alias)
            distinct, code_map = _number(values.cast(pa.string()), codes, blocked_values,
                                         text_order=id_type == "user_id")  # fmt: skip
            dictionaries[id_type] = distinct
            node = np.where(codes >= 0, code_map[np.maximum(codes, 0)] if len(code_map) else -1,
                            -1)  # fmt: skip
            columns.append(np.where(node >= 0, node + offset, -1))
            node_values.append(distinct)
            node_types += [id_type] * len(distinct)
            offset += len(distinct)
            continue
        # only values some event carries as this type (an alias's previous id is one type)
        merged = pa.concat_arrays([
            v.cast(pa.string()).take(pa.array(np.flatnonzero(
                np.bincount(c[c >= 0], minlength=len(v)))))
            for c, v in per_type[id_type]])  # fmt: skip
        distinct = pc.unique(merged.filter(pa.array(_kept(merged, blocked_values))))
        distinct = distinct.take(pc.sort_indices(distinct))  # text order within the type
        dictionaries[id_type] = distinct
        for codes, values in per_type[id_type]:
            position = pc.index_in(values.cast(pa.string()), value_set=distinct)
            lookup = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            node = np.where(codes >= 0, lookup[np.maximum(codes, 0)] if len(lookup) else -1, -1)
            columns.append(np.where(node >= 0, node + offset, -1))
        node_values.append(distinct)
        node_types += [id_type] * len(distinct)
        offset += len(distinct)
    n_nodes = offset
    found = components(columns, n_nodes, len(dictionaries["user_id"]))
    label, hub = found.label, found.hub

    # the incremental map, by node
    all_values = pa.concat_arrays(node_values) if node_values else pa.array([], pa.string())
    live_node, person_codes, person_name = _incremental(
        con, all_values, [len(dictionaries[t]) for t in TYPES])
    matched = live_node >= 0
    matched[matched] &= label[live_node[matched]] >= 0
    comp_of, person_of = label[live_node[matched]], person_codes[matched]
    split, merged_only = _disagree(comp_of, person_of, found.count,
                                   int(person_codes.max(initial=-1)) + 1)  # fmt: skip
    in_live = np.zeros(n_nodes, dtype=bool)
    in_live[live_node[live_node >= 0]] = True
    user_nodes = len(dictionaries["user_id"])
    several_users = np.bincount(label[:user_nodes][label[:user_nodes] >= 0],
                                minlength=found.count) > 1  # fmt: skip
    examples = _examples(split, comp_of, person_of, person_name, label, node_types,
                         all_values)  # fmt: skip
    return {
        "identifiers": n_nodes,
        "components": found.count,
        "hubs": int(hub.sum()),
        "split_in_incremental": int(split.sum()),
        "merged_in_incremental_only": int(merged_only.sum()),
        "not_in_incremental": int(np.count_nonzero((label >= 0) & ~in_live)),
        "components_with_several_user_ids": int(several_users.sum()),
        "agrees": not split.any() and not merged_only.any(),
        "examples": examples,
    }


def _incremental(con: duckdb.DuckDBPyConnection, node_values: pa.Array, sizes: list[int],
                 by_hash: bool = True
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], Callable[[int], str]]:
    """Per stored identity: its rebuilt node (-1 if none) and a person code; and a
    function naming a person code. ``node_values`` are the rebuilt nodes' values in node
    order, ``sizes`` how many of them each type in :data:`TYPES` has.

    The engine joins ``identities`` to the nodes (no string hashing in Python). Persons
    are coded by a 64-bit hash of their id; ``persons.person_id`` is unique, so if the
    hashes of all persons are distinct too the codes are exact. Otherwise (never seen; or
    ``by_hash=False``) the ids themselves are dictionary-encoded.
    """
    if by_hash:
        [(total, distinct)] = con.execute(
            "SELECT count(*), count(DISTINCT hash(person_id)) FROM persons").fetchall()
        by_hash = total == distinct
    kinds = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(len(TYPES), dtype=np.int32), sizes)),
        pa.array(TYPES, pa.string()))  # fmt: skip
    nodes = pa.table({"t": kinds, "v": node_values,
                      "node": pa.array(np.arange(len(node_values), dtype=np.int64))})  # fmt: skip
    con.register("_rebuilt_nodes", nodes)
    try:
        live = con.sql(
            "SELECT coalesce(n.node, -1) AS node, "
            f"{'hash(i.person_id)' if by_hash else 'i.person_id'} AS person FROM identities i "
            "LEFT JOIN _rebuilt_nodes n ON n.t = i.id_type AND n.v = i.id_value"
        ).to_arrow_table()
    finally:
        con.unregister("_rebuilt_nodes")
    node = live.column("node").to_numpy().astype(np.int64)
    if not by_hash:
        codes, values = _encode(live.column("person"))
        return node, codes, lambda code: str(values[code].as_py())
    person = pc.dictionary_encode(live.column("person").combine_chunks())
    hashes = person.dictionary.to_numpy()
    inverse = person.indices.to_numpy()

    def name(code: int) -> str:
        rows = con.execute("SELECT any_value(person_id) FROM identities "
                           "WHERE hash(person_id) = ?", [int(hashes[code])]).fetchall()
        return str(rows[0][0]) if rows else ""

    return node, inverse.astype(np.int64), name


def _disagree(comp: NDArray[np.int64], person: NDArray[np.int64], n_comps: int,
              n_persons: int) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:  # fmt: skip
    """Components spanning several persons, and persons spanning several components."""

    def spans(key: NDArray[np.int64], value: NDArray[np.int64], size: int) -> NDArray[np.bool_]:
        low = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
        high = np.full(size, -1, dtype=np.int64)
        np.minimum.at(low, key, value)
        np.maximum.at(high, key, value)
        return (high >= 0) & (low != high)

    return spans(comp, person, n_comps), spans(person, comp, n_persons)


def _examples(split: NDArray[np.bool_], comp_of: NDArray[np.int64],
              person_of: NDArray[np.int64], person_name: Callable[[int], str],
              label: NDArray[np.int64], node_types: list[str],
              node_values: pa.Array) -> list[dict[str, Any]]:  # fmt: skip
    """Up to five split components, named (as the SQL rebuild does) by their smallest
    ``type:value`` text, with the persons they span."""
    bad = np.flatnonzero(split)
    if not len(bad):
        return []
    names: dict[int, str] = {}
    for node in np.flatnonzero(np.isin(label, bad)).tolist():
        text = f"{node_types[node]}:{node_values[node].as_py()}"
        comp = int(label[node])
        names[comp] = min(names.get(comp, text), text)
    spanned: dict[int, set[str]] = {}
    for comp, person in zip(comp_of.tolist(), person_of.tolist(), strict=True):
        if comp in names:
            spanned.setdefault(comp, set()).add(person_name(person))
    named = sorted((names[c], sorted(spanned.get(c, ()))) for c in bad.tolist())
    named.sort()
    return [{"component": c, "persons": p} for c, p in named[:5]]
