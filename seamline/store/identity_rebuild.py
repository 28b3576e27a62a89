"""The batch identity rebuild: one scan of the events, integer-coded identifiers, SciPy
connected components, and a comparison with the incremental person map.

Same rules and the same report as the recursive-SQL :func:`seamline.store.identity.rebuild`
(kept as the reference; a test checks they agree), about an order of magnitude faster:

1. one DuckDB scan derives each event's identifiers with the incremental path's rules
   (trimmed ids, lower-cased emails with an ``@`` inside, phones, an alias's previous id);
2. Arrow dictionary-encodes each identifier column; placeholder values are dropped by the
   same SQL test over the *distinct* values only; phones go through libphonenumber once per
   distinct raw value, except values already stored as a normalised phone (E.164 is a fixed
   point of the normalisation, so they need no second pass);
3. :func:`seamline.identity.components.components` finds hubs and components in NumPy/SciPy;
4. the incremental map (``identities``) is joined by node code to count disagreements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from seamline.identity.components import components
from seamline.identity.identifiers import ID_TYPES
from seamline.store.identity import _BLOCKED_SQL

# Event identifiers, one column each, with the incremental path's rules; DISTINCT because
# events carrying the same identifiers add the same links (most of a person's events do).
# ``contains`` skips
# the JSON parse for rows whose text cannot hold the key (stored JSON is msgspec's output,
# so keys are never escaped).
_SCAN = """
WITH src AS (
    SELECT type, user_id, anonymous_id, device_id, previous_id,
           CASE WHEN type = 'identify'
                THEN coalesce(CASE WHEN contains(traits, 'email') THEN traits->>'email' END,
                              CASE WHEN contains(context, 'email')
                                   THEN context->'traits'->>'email' END)
                WHEN contains(context, 'email') THEN context->'traits'->>'email' END AS email,
           CASE WHEN type = 'identify'
                THEN coalesce(CASE WHEN contains(traits, 'phone') THEN traits->>'phone' END,
                              CASE WHEN contains(context, 'phone')
                                   THEN context->'traits'->>'phone' END)
                WHEN contains(context, 'phone') THEN context->'traits'->>'phone' END AS phone
    FROM events
)
SELECT DISTINCT trim(user_id) AS user_id,
       CASE WHEN email IS NOT NULL AND position('@' IN trim(email)) > 1
                 AND NOT ends_with(trim(email), '@') THEN lower(trim(email)) END AS email,
       phone,
       trim(device_id) AS device_id,
       trim(anonymous_id) AS anonymous_id,
       CASE WHEN type = 'alias' THEN trim(previous_id) END AS previous_id
FROM src
"""
TYPES = ID_TYPES  # priority order: the strongest first


def _kept(con: duckdb.DuckDBPyConnection, values: pa.Array, blocked_list: str) -> pa.Array:
    """Which distinct values survive the placeholder test (not empty, not blocked)."""
    con.register("_values", pa.table({"v": values}))
    try:
        mask = con.sql(
            "SELECT v IS NOT NULL AND v <> '' AND NOT coalesce("
            f"{_BLOCKED_SQL.format(blocked=blocked_list)}, FALSE) FROM _values"
        ).to_arrow_table().column(0)
    finally:
        con.unregister("_values")
    return mask


def _number(con: duckdb.DuckDBPyConnection, values: pa.Array, codes: NDArray[np.int64],
            blocked_list: str) -> tuple[pa.Array, NDArray[np.int64]]:
    """Distinct ``values`` (already unique) that are referenced and kept, in text order, and
    the node number of each value (-1 when dropped)."""
    referenced = np.bincount(codes[codes >= 0], minlength=len(values)) > 0
    kept = np.asarray(_kept(con, values, blocked_list).to_numpy(zero_copy_only=False), bool)
    order = pc.sort_indices(values).to_numpy()
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


def rebuild(con: duckdb.DuckDBPyConnection, blocked: list[str],
            normalise_phone: Callable[[str], str | None]) -> dict[str, Any]:  # fmt: skip
    """Connected components over every stored identifier; a report against ``identities``."""
    blocked_list = ", ".join("'" + b.replace("'", "''") + "'" for b in blocked)
    scan = con.sql(_SCAN).to_arrow_table()
    raw: dict[str, tuple[NDArray[np.int64], pa.Array]] = {
        name: _encode(scan.column(name)) for name in (*TYPES, "previous_id")
    }
    del scan
    # phones: E.164 values already in the map are fixed points; the rest through Python
    codes, values = raw["phone"]
    stored = con.sql("SELECT id_value FROM identities WHERE id_type = 'phone'").to_arrow_table()
    known = pc.is_in(values, value_set=stored.column(0).combine_chunks())
    known = known.to_numpy(zero_copy_only=False)
    unknown = np.flatnonzero(~np.asarray(known, dtype=bool))
    normalised = values.to_numpy(zero_copy_only=False).astype(object)
    normalised[unknown] = [normalise_phone(v) for v in values.take(pa.array(unknown)).to_pylist()]
    raw["phone"] = (codes, pa.array(normalised, pa.string()))
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
    offsets: dict[str, int] = {}
    for id_type in TYPES:
        parts = [(c, v) for c, v in per_type[id_type] if bool((c >= 0).any())]
        if id_type != "phone" and len(parts) <= 1:  # the common case: one distinct source
            codes, values = parts[0] if parts else per_type[id_type][0]
            distinct, code_map = _number(con, values.cast(pa.string()), codes, blocked_list)
            dictionaries[id_type], offsets[id_type] = distinct, offset
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
        keep = _kept(con, merged, blocked_list)
        distinct = pc.unique(merged.filter(keep))
        distinct = distinct.take(pc.sort_indices(distinct))  # text order within the type
        dictionaries[id_type], offsets[id_type] = distinct, offset
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
    nodes_of, persons_of = [], []
    for id_type in TYPES:
        live = con.sql("SELECT id_value, person_id FROM identities WHERE id_type = ?",
                       params=[id_type]).to_arrow_table()  # fmt: skip
        position = pc.index_in(live.column("id_value"), value_set=dictionaries[id_type])
        where = position.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        nodes_of.append(np.where(where >= 0, where + offsets[id_type], -1))
        persons_of.append(live.column("person_id"))
    live_node = np.concatenate(nodes_of)
    person_codes, person_values = _encode(pa.chunked_array(
        [c for column in persons_of for c in column.chunks], pa.string()))
    matched = live_node >= 0
    matched[matched] &= label[live_node[matched]] >= 0
    comp_of, person_of = label[live_node[matched]], person_codes[matched]
    split, merged_only = _disagree(comp_of, person_of, found.count, len(person_values))
    in_live = np.zeros(n_nodes, dtype=bool)
    in_live[live_node[live_node >= 0]] = True
    user_nodes = len(dictionaries["user_id"])
    several_users = np.bincount(label[:user_nodes][label[:user_nodes] >= 0],
                                minlength=found.count) > 1  # fmt: skip
    all_values = pa.concat_arrays(node_values) if node_values else pa.array([], pa.string())
    examples = _examples(split, comp_of, person_of, person_values, label, node_types,
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
              person_of: NDArray[np.int64], person_values: pa.Array,
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
            spanned.setdefault(comp, set()).add(person_values[person].as_py())
    named = sorted((names[c], sorted(spanned.get(c, ()))) for c in bad.tolist())
    named.sort()
    return [{"component": c, "persons": p} for c, p in named[:5]]
