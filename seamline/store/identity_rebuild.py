"""The batch identity rebuild: one scan of the events, integer-coded identifiers, SciPy
connected components, and a comparison with the incremental person map.

Same rules and the same report as the recursive-SQL :func:`seamline.store.identity.rebuild`
(kept as the reference; a test checks they agree), one to two orders of magnitude faster:

1. one DuckDB scan reads each event's identifiers from plain columns: ids as stored
   (trimmed at ingest), the normalised ``contact_email`` / ``contact_phone`` the identity
   service stored with the event (:mod:`seamline.store.contacts`: no JSON, no
   libphonenumber), an alias's previous id;
2. Arrow dictionary-encodes each identifier column; placeholder values are dropped by the
   same test over the *distinct* values only (so a value blocked since ingest drops out);
3. :func:`seamline.identity.components.components` finds hubs and components in NumPy/SciPy;
4. meanwhile, on a cursor of its own, the engine joins the incremental map
   (``identities``) to the rebuilt nodes by 64-bit hashes of the values (integer keys:
   about 3x cheaper than joining the texts; every match is confirmed on the texts), and
   the disagreements are counted per component and per person.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
                 pc.equal(pc.utf8_trim(folded, characters="0-"), ""))  # fmt: skip
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
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="seamline-rebuild") as pool:
        persons_distinct = _in_background(pool, con, _persons_hash_distinct)
        return _rebuild(con, pa.array(blocked, pa.string()), pool, persons_distinct)


def _rebuild(con: duckdb.DuckDBPyConnection, blocked_values: pa.Array, pool: ThreadPoolExecutor,
             persons_distinct: Future[bool]) -> dict[str, Any]:  # fmt: skip
    scan = con.sql(_SCAN).to_arrow_table()
    names = (*TYPES, "previous_id")
    # Arrow kernels release the GIL: encode the columns on both cores, the fullest first
    scanned = {name: scan.column(name) for name in names}
    del scan
    fullest = sorted(names, key=lambda name: scanned[name].null_count)
    encoding = {name: pool.submit(_encode, scanned.pop(name)) for name in fullest}
    raw = {name: encoding[name].result() for name in names}
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
        offset += len(distinct)
    n_nodes = offset
    sizes = [len(dictionaries[t]) for t in TYPES]
    all_values = pa.concat_arrays(node_values) if node_values else pa.array([], pa.string())
    # the incremental map, by node: the engine joins it on its own cursor (releasing the
    # GIL) while this thread finds the components
    live = _in_background(pool, con, _live_rows, all_values, sizes, persons_distinct.result())
    found = components(columns, n_nodes, sizes[0])
    live_node, person_codes, person_values = live.result()
    label, hub = found.label, found.hub
    person_name = _namer(con, person_values)
    matched = live_node >= 0
    matched[matched] &= label[live_node[matched]] >= 0
    comp_of, person_of = label[live_node[matched]], person_codes[matched]
    split, merged_only = _disagree(comp_of, person_of, found.count)
    in_live = np.zeros(n_nodes, dtype=bool)
    in_live[live_node[live_node >= 0]] = True
    users = label[:sizes[0]]
    several_users = np.bincount(users[users >= 0], minlength=found.count) > 1
    examples = _examples(split, comp_of, person_of, person_name, label, sizes, all_values)
    return {
        "identifiers": n_nodes,
        "components": found.count,
        "hubs": int(hub.sum()),
        "split_in_incremental": int(split.sum()),
        "merged_in_incremental_only": merged_only,
        "not_in_incremental": int(np.count_nonzero((label >= 0) & ~in_live)),
        "components_with_several_user_ids": int(several_users.sum()),
        "agrees": not split.any() and not merged_only,
        "examples": examples,
    }


def _in_background(pool: ThreadPoolExecutor, con: duckdb.DuckDBPyConnection,
                   work: Callable[..., Any], *args: Any) -> Future[Any]:  # fmt: skip
    """``work(cursor, *args)`` in ``pool`` on a cursor of its own (a cursor serves one
    thread), opened here so that ``con`` is only ever used by the calling thread."""
    cursor = con.cursor()

    def run() -> Any:
        try:
            return work(cursor, *args)
        finally:
            cursor.close()

    return pool.submit(run)


def _incremental(con: duckdb.DuckDBPyConnection, node_values: pa.Array, sizes: list[int],
                 by_hash: bool = True
                 ) -> tuple[NDArray[np.int64], NDArray[np.int64], Callable[[int], str]]:
    """Per stored identity: its rebuilt node (-1 if none) and a person key; and a function
    naming a person key. ``node_values`` are the rebuilt nodes' values in node order,
    ``sizes`` how many of them each type in :data:`TYPES` has (see :func:`_live_rows`)."""
    by_hash = by_hash and _persons_hash_distinct(con)
    node, person, person_values = _live_rows(con, node_values, sizes, by_hash)
    return node, person, _namer(con, person_values)


def _persons_hash_distinct(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``hash(person_id)`` tells every person apart (``person_id`` is unique)."""
    hashes = con.sql("SELECT hash(person_id) AS h FROM persons").to_arrow_table()
    ordered = np.sort(np.asarray(hashes.column("h").to_numpy(), np.uint64))
    return not bool((ordered[1:] == ordered[:-1]).any())


def _live_rows(con: duckdb.DuckDBPyConnection, node_values: pa.Array, sizes: list[int],
               by_hash: bool) -> tuple[NDArray[np.int64], NDArray[np.int64], pa.Array | None]:
    """Per stored identity: its rebuilt node (-1 if none) and a person key; and, when the
    keys are dictionary codes, the person ids they stand for.

    The engine joins ``identities`` to the nodes by (type, 64-bit hash of the value):
    integer keys, far cheaper than joining the texts. A match is then confirmed by
    comparing the texts, so a hash collision cannot match a stranger (it can only add a
    row that is then unmatched, which no count looks at). Persons are keyed by a 64-bit
    hash of their id when ``by_hash`` (the caller checked :func:`_persons_hash_distinct`:
    ``persons.person_id`` is unique, so if its hashes are distinct too the keys are
    exact); else (never seen) the ids themselves are dictionary-encoded.
    """
    kinds = np.repeat(np.arange(len(TYPES), dtype=np.int8), sizes)
    nodes = pa.table({"t": kinds, "v": node_values,
                      "node": pa.array(np.arange(len(node_values), dtype=np.int64))})  # fmt: skip
    type_code = ("CASE i.id_type " + " ".join(f"WHEN '{t}' THEN {n}" for n, t in
                                              enumerate(TYPES)) + " ELSE -1 END")  # fmt: skip
    con.register("_rebuilt_nodes", nodes)
    try:
        live = con.sql(
            "WITH n AS (SELECT t, hash(v) AS h, node FROM _rebuilt_nodes) "
            "SELECT coalesce(n.node, -1) AS node, i.id_value AS v, "
            f"{'hash(i.person_id)' if by_hash else 'i.person_id'} AS person "
            f"FROM identities i LEFT JOIN n ON n.t = {type_code} AND n.h = hash(i.id_value)"
        ).to_arrow_table()
    finally:
        con.unregister("_rebuilt_nodes")
    node = np.array(live.column("node").to_numpy(), np.int64)
    hit = np.flatnonzero(node >= 0)
    same = pc.equal(live.column("v").take(pa.array(hit)), node_values.take(pa.array(node[hit])))
    node[hit[~np.asarray(same.to_numpy(zero_copy_only=False), bool)]] = -1
    if not by_hash:
        codes, values = _encode(live.column("person"))
        return node, codes, values
    return node, np.asarray(live.column("person").to_numpy(), np.uint64).view(np.int64), None


def _namer(con: duckdb.DuckDBPyConnection, person_values: pa.Array | None
           ) -> Callable[[int], str]:  # fmt: skip
    """The person id of a key from :func:`_live_rows` (its dictionary, or its hash)."""
    if person_values is not None:
        values = person_values
        return lambda code: str(values[code].as_py())

    def name(key: int) -> str:
        rows = con.execute("SELECT any_value(person_id) FROM identities "
                           "WHERE hash(person_id) = ?",
                           [int(np.int64(key).view(np.uint64))]).fetchall()  # fmt: skip
        return str(rows[0][0]) if rows else ""

    return name


def _disagree(comp: NDArray[np.int64], person: NDArray[np.int64],
              n_comps: int) -> tuple[NDArray[np.bool_], int]:  # fmt: skip
    """Components spanning several persons (per component), and how many persons span
    several components. ``person`` holds any distinct key per person (not dense)."""
    low = np.full(n_comps, np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full(n_comps, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(low, comp, person)
    np.maximum.at(high, comp, person)
    present = np.bincount(comp, minlength=n_comps) > 0
    split = present & (low != high)
    # the distinct (component, person) pairs: one per unsplit component, and those of the
    # rows of split components; a person in two pairs spans two components
    in_split = split[comp]
    pair_comp, pair_person = comp[in_split], person[in_split]
    order = np.lexsort((pair_person, pair_comp))
    pair_comp, pair_person = pair_comp[order], pair_person[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (pair_comp[1:] != pair_comp[:-1]) | (pair_person[1:] != pair_person[:-1])
    persons = np.sort(np.concatenate([low[present & ~split], pair_person[first]]))
    repeated = persons[1:] == persons[:-1]
    starts = repeated & np.concatenate([[True], ~repeated[:-1]]) if len(repeated) else repeated
    return split, int(np.count_nonzero(starts))


def _examples(split: NDArray[np.bool_], comp_of: NDArray[np.int64],
              person_of: NDArray[np.int64], person_name: Callable[[int], str],
              label: NDArray[np.int64], sizes: list[int],
              node_values: pa.Array) -> list[dict[str, Any]]:  # fmt: skip
    """Up to five split components, named (as the SQL rebuild does) by their smallest
    ``type:value`` text, with the persons they span."""
    bad = np.flatnonzero(split)
    if not len(bad):
        return []
    kind = np.repeat(np.arange(len(TYPES)), sizes)
    names: dict[int, str] = {}
    for node in np.flatnonzero(np.isin(label, bad)).tolist():
        text = f"{TYPES[kind[node]]}:{node_values[node].as_py()}"
        comp = int(label[node])
        names[comp] = min(names.get(comp, text), text)
    spanned: dict[int, set[str]] = {}
    for comp, person in zip(comp_of.tolist(), person_of.tolist(), strict=True):
        if comp in names:
            spanned.setdefault(comp, set()).add(person_name(person))
    named = sorted((names[c], sorted(spanned.get(c, ()))) for c in bad.tolist())
    named.sort()
    return [{"component": c, "persons": p} for c, p in named[:5]]
