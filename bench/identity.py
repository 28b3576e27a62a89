"""Identity rebuild benchmark: seamline's batch rebuild against two peers on the same events.

Over the bench world (``bench/world.py``: ~10M events, ~1.7M persons by default):

- **seamline**: ``Workspace.rebuild_identity()`` (one DuckDB scan, Arrow dictionary codes,
  SciPy connected components, comparison with the incremental map);
- **duckdb-sql**: a plain DuckDB iterative-SQL formulation: identifiers from the events
  (the same columns, including the stored ``contact_email`` / ``contact_phone``), integer
  node ids, one edge per event from its strongest identifier to each other one, then label
  propagation (``UPDATE ... SET label = min neighbour label``) until nothing changes;
- **networkx**: the same edge list (extracted with DuckDB, included in the time) into a
  ``networkx.Graph`` and ``connected_components``.

Each runs in its own process; the time is the call itself (imports and opening excluded)
and the memory is that process's peak RSS (``ru_maxrss``). Target (issue #4): seamline <=
0.5x duckdb-sql, and far below networkx.

    .venv/bin/python bench/identity.py --events 10000000
    .venv/bin/python bench/identity.py --events 2000000 --skip networkx

Results: stdout and ``bench/results/identity-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import RESULTS, ROOT, ensure_world, world_dir

# identifiers per event, as the rebuild reads them: ids and the stored, normalised contact
# columns (contact_email, contact_phone; no JSON, no libphonenumber)
_EDGES = """
CREATE TEMP TABLE obs AS
WITH src AS (
    SELECT rowid AS ev, trim(user_id) AS u, trim(anonymous_id) AS a, trim(device_id) AS d,
           contact_email AS em, contact_phone AS ph
    FROM events
)
SELECT ev, 0 AS pri, 'user_id:' || u AS node FROM src WHERE u IS NOT NULL
UNION ALL SELECT ev, 1, 'email:' || em FROM src WHERE em IS NOT NULL
UNION ALL SELECT ev, 2, 'phone:' || ph FROM src WHERE ph IS NOT NULL
UNION ALL SELECT ev, 3, 'device_id:' || d FROM src WHERE d IS NOT NULL
UNION ALL SELECT ev, 4, 'anonymous_id:' || a FROM src WHERE a IS NOT NULL;
CREATE TEMP TABLE nodes AS
SELECT node, row_number() OVER () AS id FROM (SELECT DISTINCT node FROM obs);
CREATE TEMP TABLE edges AS
WITH coded AS (SELECT o.ev, o.pri, n.id FROM obs o JOIN nodes n USING (node)),
top AS (SELECT ev, arg_min(id, pri) AS id FROM coded GROUP BY ev)
SELECT DISTINCT t.id AS a, c.id AS b FROM coded c JOIN top t USING (ev) WHERE c.id <> t.id;
"""
_PROPAGATE = """
UPDATE labels SET label = m.label FROM (
    SELECT x, min(l.label) AS label FROM (
        SELECT a AS x, b AS y FROM edges UNION ALL SELECT b, a FROM edges
    ) e JOIN labels l ON l.id = e.y GROUP BY x
) m WHERE labels.id = m.x AND m.label < labels.label
"""


def work_seamline(data: Path) -> dict[str, Any]:
    import seamline
    import seamline.store.identity_rebuild  # imports (SciPy) are not timed

    with seamline.open(data / "workspace") as ws:
        started = time.perf_counter()
        report = ws.rebuild_identity()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "components": report["components"],
            "identifiers": report["identifiers"], "agrees": report["agrees"]}  # fmt: skip


def work_duckdb_sql(data: Path) -> dict[str, Any]:
    import duckdb

    path = data / "workspace" / "seamline.duckdb"
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"ATTACH '{path}' AS w (READ_ONLY)")
    started = time.perf_counter()
    con.execute(_EDGES.replace("FROM events", "FROM w.events"))
    con.execute("CREATE TEMP TABLE labels AS SELECT id, id AS label FROM nodes")
    rounds = 0
    while True:
        rounds += 1
        changed = con.execute(_PROPAGATE).fetchall()[0][0]
        if not changed:
            break
    components = con.execute("SELECT count(DISTINCT label) FROM labels").fetchall()[0][0]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "components": components, "rounds": rounds}


def work_networkx(data: Path) -> dict[str, Any]:
    import duckdb
    import networkx

    path = data / "workspace" / "seamline.duckdb"
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"ATTACH '{path}' AS w (READ_ONLY)")
    started = time.perf_counter()
    con.execute(_EDGES.replace("FROM events", "FROM w.events"))
    edges = con.sql("SELECT a, b FROM edges").fetchnumpy()
    nodes = con.sql("SELECT id FROM nodes").fetchnumpy()["id"]
    extracted = time.perf_counter() - started
    graph = networkx.Graph()
    graph.add_nodes_from(nodes.tolist())
    graph.add_edges_from(zip(edges["a"].tolist(), edges["b"].tolist(), strict=True))
    components = networkx.number_connected_components(graph)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "components": components, "edge_extraction_seconds": extracted}


WORKERS = {"seamline": work_seamline, "duckdb-sql": work_duckdb_sql, "networkx": work_networkx}


def run_worker(name: str, data: Path) -> dict[str, Any]:
    """One measurement in a fresh process: its own time and peak RSS."""
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--data", str(data)],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", action="append", default=[], choices=list(WORKERS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](Path(args.data))
        result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    data, info = ensure_world(args.events, args.seed)
    assert data == world_dir(args.events, args.seed)
    print(f"world: {info['events']:,} events, {info['persons']:,} persons ({data})")
    results: dict[str, Any] = {}
    for name in WORKERS:
        if name in args.skip:
            continue
        results[name] = run_worker(name, data)
        print(f"  {name:<11} {json.dumps(results[name])}", flush=True)
    ours = results.get("seamline", {}).get("seconds")
    checks = []
    for peer, target in (("duckdb-sql", 0.5), ("networkx", 0.5)):
        theirs = results.get(peer, {}).get("seconds")
        if ours and theirs:
            ratio = ours / theirs
            checks.append({"vs": peer, "ratio": ratio, "target": target,
                           "pass": ratio <= target})  # fmt: skip
    print("\n| measurement | seconds | peak RSS (MiB) | components |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r.get('seconds', float('nan')):.2f} | "
              f"{r.get('rss_mib', float('nan')):.0f} | {r.get('components', '')} |")  # fmt: skip
    for c in checks:
        print(f"seamline / {c['vs']}: {c['ratio']:.3f} (target <= {c['target']}) "
              f"{'PASS' if c['pass'] else 'MISS'}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {"world": info, "results": results, "checks": checks,
              "load_average": os.getloadavg(), "at": stamp}  # fmt: skip
    (RESULTS / f"identity-{stamp}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
