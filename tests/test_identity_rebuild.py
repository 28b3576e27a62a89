"""The fast batch rebuild (integer codes + SciPy components) against the recursive-SQL
reference, and the bulk world loader the benchmarks use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seamline
from seamline.demo.bulk import SOURCES, generate, person_ids
from seamline.identity import ID_TYPES
from seamline.store import Store
from seamline.store import identity as reference
from seamline.store.bulk import load_world
from seamline.store.identity_rebuild import _incremental, rebuild
from tests.test_identity import ev, journey, load

KIOSK = {"device": {"id": "kiosk"}}


def both(ws: seamline.Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
    priority = {t: i for i, t in enumerate(ID_TYPES)}
    with ws.store.cursor() as cur:
        fast = rebuild(cur, ws.rules.blocked_list())
        slow = reference.rebuild(cur, ws.rules.blocked_list(), priority)
    for example in slow["examples"]:  # list(DISTINCT ...) in SQL has no order
        example["persons"] = sorted(example["persons"])
    return fast, slow


def test_same_report_as_the_sql_rebuild_with_guardrails(data_dir: Path) -> None:
    with seamline.Workspace(data_dir, seamline.settings.Settings(phone_region="GB")) as ws:
        load(ws, journey())
        load(ws, {"android": [
            ev("identify", 0, userId="alice", anonymousId="ipad", context=KIOSK),
            ev("identify", 5, userId="bob", anonymousId="ipad", context=KIOSK),
            ev("track", 6, event="Browse", anonymousId="ipad"),
            ev("track", 7, event="A", userId="carol", anonymousId="undefined"),
            ev("track", 8, event="B", userId=" dave ", anonymousId="00000000-0000"),
            ev("identify", 9, userId="erin", traits={"email": "family@x.example"}),
            ev("identify", 10, userId="frank", traits={"email": " FAMILY@x.example"}),
            ev("alias", 11, userId="erin", previousId="old-anon"),
            ev("alias", 12, userId="frank", previousId="erin"),
            ev("track", 13, event="C", anonymousId="'NULL'"),
        ]})  # fmt: skip
        fast, slow = both(ws)
        assert fast == slow
        assert fast["hubs"] >= 3 and fast["components_with_several_user_ids"] == 0
        assert fast["identifiers"] > 10 and fast["agrees"]


def test_person_codes_by_hash_match_the_ids(data_dir: Path) -> None:
    """The rebuild codes persons by a hash of their id; the string path gives the same."""
    with seamline.Workspace(data_dir, seamline.settings.Settings(phone_region="GB")) as ws:
        load(ws, journey())
        load(ws, {"web": [ev("identify", 60, userId="u-bob", anonymousId="web-bob"),
                          ev("track", 61, event="A", anonymousId="web-carl")]})  # fmt: skip
        with ws.store.cursor() as cur:
            ids = [r[0] for r in cur.execute("SELECT person_id FROM identities").fetchall()]
            for by_hash in (True, False):  # no rebuilt nodes: every identity has none
                nodes, codes, name = _incremental(cur, pa.array([], pa.string()),
                                                  [0] * len(ID_TYPES), by_hash=by_hash)
                assert (nodes == -1).all() and len(codes) == len(ids)
                assert sorted(name(int(c)) for c in codes) == sorted(ids)
                assert len(set(codes.tolist())) == len(set(ids)) == 3


@st.composite
def links(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events that share identifiers at random: hubs, conflicts and merges all happen."""
    events = []
    for n in range(draw(st.integers(1, 25))):
        event: dict[str, Any] = {"type": "track", "event": "E", "messageId": f"m{n}",
                                 "timestamp": "2026-11-01T10:00:00Z",
                                 "anonymousId": f"a{draw(st.integers(0, 6))}"}  # fmt: skip
        if draw(st.booleans()):
            event["userId"] = f"u{draw(st.integers(0, 3))}"
        if draw(st.booleans()):
            event["context"] = {"device": {"id": f"d{draw(st.integers(0, 3))}"},
                                "traits": {"email": f"e{draw(st.integers(0, 2))}@x.example"}}
        events.append(event)
    return events


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(events=links())
def test_same_report_as_the_sql_rebuild_for_random_graphs(
    tmp_path_factory: Any, events: list[dict[str, Any]]
) -> None:
    with seamline.open(tmp_path_factory.mktemp("graph")) as ws:
        ws.add_source("app", "mobile")
        ws.import_events("app", events)
        fast, slow = both(ws)
        assert fast == slow


def test_bulk_world_loads_with_a_person_map_the_rebuild_agrees_with(tmp_path: Path) -> None:
    world = generate(20_000, seed=3)
    assert world.table.num_rows > 15_000
    store = Store.open(tmp_path / "ws")
    try:
        stored = load_world(store, world.table.drop_columns(["component"]),
                            person_ids(world.table), SOURCES)  # fmt: skip
        assert stored == world.table.num_rows
    finally:
        store.close()
    with seamline.open(tmp_path / "ws") as ws:
        report = ws.rebuild_identity()
        assert report["agrees"] and report["not_in_incremental"] == 0
        assert report["components"] == ws.stats()["persons"] == len(set(world.person_of_event))
        funnel = ws.funnel(["App Opened", "Product Viewed"], "1d").to_dict()
        assert funnel["steps"][0]["people"] > funnel["steps"][1]["people"] > 0


def test_identities_match_nodes_of_their_own_type_and_text(data_dir: Path) -> None:
    """The incremental map joins the rebuilt nodes by (type, value hash), confirmed on the
    text: a value of another type, or one no node has, matches nothing."""
    from seamline.store.identity_rebuild import TYPES

    with seamline.Workspace(data_dir, seamline.settings.Settings(phone_region="GB")) as ws:
        load(ws, journey())
        # nodes in type order: user_id 'u-ana'; anonymous_id 'u-ana' (same text, other
        # type), 'web-9' and 'nobody'
        sizes = [1 if t in ("user_id",) else 3 if t == "anonymous_id" else 0 for t in TYPES]
        values = pa.array(["u-ana", "u-ana", "web-9", "nobody"])
        with ws.store.cursor() as cur:
            rows = cur.execute("SELECT id_type, id_value, person_id FROM identities").fetchall()
            nodes, keys, name = _incremental(cur, values, sizes)
            matched = {(rows[i][0], rows[i][1]): int(n) for i, n in enumerate(nodes) if n >= 0}
            assert matched == {("user_id", "u-ana"): 0, ("anonymous_id", "web-9"): 2}
            assert {name(int(k)) for k in keys} == {r[2] for r in rows}


def test_disagreements_are_counted_per_component_and_per_person() -> None:
    import numpy as np

    from seamline.store.identity_rebuild import _disagree

    rng = np.random.default_rng(7)
    for _ in range(300):
        rows = int(rng.integers(0, 40))
        n_comps = int(rng.integers(1, 8))
        comp = rng.integers(0, n_comps, rows)
        # person keys are hashes in the rebuild: any distinct int64s, negative ones too
        person = rng.choice(np.array([-(2**63), -5, 3, 2**62, 17]), rows)
        split, merged_only = _disagree(comp, person, n_comps)
        pairs = set(zip(comp.tolist(), person.tolist(), strict=True))
        per_comp: dict[int, set[int]] = {}
        per_person: dict[int, set[int]] = {}
        for c, p in pairs:
            per_comp.setdefault(c, set()).add(p)
            per_person.setdefault(p, set()).add(c)
        assert split.tolist() == [len(per_comp.get(c, ())) > 1 for c in range(n_comps)]
        assert merged_only == sum(len(cs) > 1 for cs in per_person.values())
