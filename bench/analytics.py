"""Analytics benchmark: funnel, journey map and seams at 10M events against peers.

Over the bench world (``bench/world.py``: ~10M events, ~1.7M persons by default), each
measurement in its own process (time of the call itself, imports and loading excluded;
memory = that process's peak RSS from ``ru_maxrss``). Seamline's load is its sequence
snapshot (``Workspace.prepare()``: every event sorted by person and time into integer
arrays, once per data version), timed apart as ``load_seconds`` like chdb's MergeTree load;
``--sql`` measures the SQL path instead (no snapshot: each analysis sorts in DuckDB):

- **funnel**: seamline's 5-step funnel (1 day window) by ``app_version`` (first touch) vs
  ClickHouse ``windowFunnel`` via chdb over the same events, loaded first into a MergeTree
  table ordered by (person, ts) (load time reported apart). Target (issue #5): <= 0.25x.
- **journeys**: seamline's journey map (edges with people, transitions, median and p90
  seconds) vs the best plain DuckDB SQL we could write (``lead()`` over (person, ts), then
  ``GROUP BY`` edge with ``median``/``quantile_cont``) on the same workspace file, and vs
  pm4py ``discover_performance_dfg`` on a pandas frame (``--pm4py-sample`` to use a share of
  the persons if memory runs out; the share is recorded). Targets: <= 0.25x DuckDB SQL,
  <= 0.03x pm4py.
- **seams**: seamline's full seams scan vs one DuckDB query for one hand-off pair
  (``Card Activation Failed`` in the app, then any call-centre event within 2 hours, per
  person's first occurrence). Target (issue #6): <= 10x.

    .venv/bin/python bench/analytics.py --events 10000000
    .venv/bin/python bench/analytics.py --events 2000000 --skip pm4py

Results: stdout and ``bench/results/analytics-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world import RESULTS, ROOT, ensure_world

FUNNEL = ("App Opened", "Product Viewed", "Checkout Started", "Payment Submitted",
          "Order Completed")  # fmt: skip


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# -- seamline ------------------------------------------------------------------------------
def _prepare(ws: Any) -> dict[str, Any]:
    """Build the sequence snapshot first and report it apart (as chdb's load_seconds): the
    query time is then the analysis alone. ``--sql`` runs the SQL path instead."""
    if os.environ.get("BENCH_SQL_PATH"):
        ws.snapshots.enabled = False
        return {"path": "sql"}
    info = ws.prepare()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"path": "snapshot", "load_seconds": info["build_seconds"],
            "snapshot_mib": info["bytes"] / 2**20, "rss_after_load_mib": rss}  # fmt: skip


def work_seamline_funnel(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    import seamline

    with seamline.open(data / "workspace") as ws:
        snapshot = _prepare(ws)
        seconds, result = _timed(lambda: ws.funnel(list(FUNNEL), "1d", "app_version").to_dict())
    return {"seconds": seconds, **snapshot, "people": [s["people"] for s in result["steps"]],
            "breakdown": {k: [s["people"] for s in v] for k, v in result["breakdown"].items()}}


def work_seamline_journeys(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    import seamline

    with seamline.open(data / "workspace") as ws:
        snapshot = _prepare(ws)
        seconds, result = _timed(lambda: ws.journeys().to_dict())
    top = result["edges"][0]
    return {"seconds": seconds, **snapshot, "edges": len(result["edges"]),
            "top_edge": {k: top[k] for k in ("from", "to", "people", "transitions",
                                             "median_seconds")}}  # fmt: skip


def work_seamline_seams(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    import scipy.stats  # noqa: F401  # imports are excluded: seams imports it on first use

    import seamline

    with seamline.open(data / "workspace") as ws:
        snapshot = _prepare(ws)
        seconds, result = _timed(lambda: ws.seams("2h").to_dict())
    first = result["seams"][0] if result["seams"] else {}
    return {"seconds": seconds, **snapshot, "seams": len(result["seams"]),
            "candidates": result["candidates"],
            "first": {k: first.get(k) for k in ("kind", "from", "to", "people", "rate",
                                                 "baseline_rate")}}  # fmt: skip


# -- peers ---------------------------------------------------------------------------------
def work_chdb_funnel(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    from chdb import session

    with tempfile.TemporaryDirectory() as tmp:
        sess = session.Session(tmp)
        parquet = data / "events.parquet"
        load, _ = _timed(lambda: sess.query(f"""
            CREATE TABLE ev ENGINE = MergeTree ORDER BY (person, ts) AS
            SELECT person, ts, event, app_version FROM file('{parquet}', Parquet)
            WHERE type IN ('track', 'page', 'screen') AND person IS NOT NULL"""))
        steps = ", ".join(f"event = '{s}'" for s in FUNNEL)
        query = f"""
            SELECT breakdown, level, count() AS people FROM (
                SELECT person,
                       windowFunnel(86400)(toDateTime(ts), {steps}) AS level,
                       argMinIf(app_version, ts, event = '{FUNNEL[0]}') AS breakdown
                FROM ev GROUP BY person)
            WHERE level > 0 GROUP BY breakdown, level ORDER BY breakdown, level
            FORMAT JSONCompact"""
        seconds, result = _timed(lambda: sess.query(query).bytes())
        sess.close()
    rows = json.loads(result)["data"]
    levels = [0] * len(FUNNEL)
    for _, level, people in rows:
        for k in range(int(level)):
            levels[k] += int(people)
    return {"seconds": seconds, "load_seconds": load, "people": levels}


_LEAD = """
WITH t AS (
    SELECT resolved_person_id AS person, coalesce(event, type) AS event, channel, timestamp AS ts,
           lead(coalesce(event, type)) OVER w AS next_event, lead(channel) OVER w AS next_channel,
           lead(timestamp) OVER w AS next_ts
    FROM events_resolved
    WHERE resolved_person_id IS NOT NULL AND type IN ('track', 'page', 'screen')
    WINDOW w AS (PARTITION BY resolved_person_id ORDER BY timestamp, message_id)
)
SELECT event, channel, next_event, next_channel, count(DISTINCT person) AS people,
       count(*) AS transitions, median(epoch(next_ts - ts)) AS median_seconds,
       quantile_cont(epoch(next_ts - ts), 0.9) AS p90_seconds
FROM t WHERE next_event IS NOT NULL
GROUP BY ALL ORDER BY people DESC
"""

_PAIR = """
WITH a AS (
    SELECT resolved_person_id AS person, min(timestamp) AS ts FROM events_resolved
    WHERE event = 'Card Activation Failed' AND channel = 'mobile' GROUP BY 1
)
SELECT count(*) AS people,
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM events_resolved c WHERE c.resolved_person_id = a.person
           AND c.channel = 'call_center' AND c.timestamp > a.ts
           AND c.timestamp <= a.ts + INTERVAL 2 HOUR)) AS followed
FROM a
"""


def _duckdb(data: Path) -> Any:
    import duckdb

    con = duckdb.connect(str(data / "workspace" / "seamline.duckdb"), read_only=True)
    con.execute("SET enable_progress_bar = false")
    return con


def work_duckdb_journeys(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    con = _duckdb(data)
    seconds, rows = _timed(lambda: con.sql(_LEAD).fetchall())
    return {"seconds": seconds, "edges": len(rows),
            "top_edge": {"from": rows[0][0], "to": rows[0][2], "people": rows[0][4],
                         "transitions": rows[0][5], "median_seconds": rows[0][6]}}  # fmt: skip


def work_duckdb_pair(data: Path, _: dict[str, Any]) -> dict[str, Any]:
    con = _duckdb(data)
    seconds, rows = _timed(lambda: con.sql(_PAIR).fetchall())
    return {"seconds": seconds, "people": rows[0][0], "followed": rows[0][1]}


def work_pm4py(data: Path, options: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(data / "events.parquet",
                          filters=[("type", "in", ["track", "page", "screen"])])  # fmt: skip
    sample = float(options.get("sample", 1.0))
    if sample < 1.0:
        persons = pc.unique(table.column("person"))
        keep = persons.take(pc.sort_indices(persons))[: int(len(persons) * sample)]
        table = table.filter(pc.is_in(table.column("person"), value_set=keep))
    frame = pd.DataFrame({
        "case:concept:name": table.column("person").to_pandas(),
        "concept:name": pc.binary_join_element_wise(
            table.column("event"), table.column("channel"), " @ ").to_pandas(),
        "time:timestamp": table.column("ts").to_pandas(),
    })  # fmt: skip
    del table
    import pm4py

    seconds, result = _timed(lambda: pm4py.discover_performance_dfg(frame))
    return {"seconds": seconds, "edges": len(result[0]), "rows": len(frame), "sample": sample}


WORKERS = {
    "seamline-funnel": work_seamline_funnel,
    "chdb-funnel": work_chdb_funnel,
    "seamline-journeys": work_seamline_journeys,
    "duckdb-journeys": work_duckdb_journeys,
    "pm4py": work_pm4py,
    "seamline-seams": work_seamline_seams,
    "duckdb-pair": work_duckdb_pair,
}
CHECKS = (  # (ours, peer, target ratio)
    ("seamline-funnel", "chdb-funnel", 0.25),
    ("seamline-journeys", "duckdb-journeys", 0.25),
    ("seamline-journeys", "pm4py", 0.03),
    ("seamline-seams", "duckdb-pair", 10.0),
)


def run_worker(name: str, data: Path, options: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--worker", name, "--data", str(data),
                          "--options", json.dumps(options)],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {out.returncode}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", action="append", default=[], choices=list(WORKERS))
    parser.add_argument("--only", action="append", default=[], choices=list(WORKERS))
    parser.add_argument("--pm4py-sample", type=float, default=1.0,
                        help="share of persons pm4py gets (its time is then scaled up)")
    parser.add_argument("--sql", action="store_true",
                        help="seamline's SQL path (no sequence snapshot), as before")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = WORKERS[args.worker](Path(args.data), json.loads(args.options))
        result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result, default=str))
        return
    if args.sql:
        os.environ["BENCH_SQL_PATH"] = "1"  # inherited by the worker processes
    data, info = ensure_world(args.events, args.seed)
    print(f"world: {info['events']:,} events, {info['persons']:,} persons ({data})")
    results: dict[str, Any] = {}
    for name in WORKERS:
        if name in args.skip or (args.only and name not in args.only):
            continue
        options = {"sample": args.pm4py_sample} if name == "pm4py" else {}
        results[name] = run_worker(name, data, options)
        print(f"  {name:<18} {json.dumps(results[name], default=str)}", flush=True)
    checks = []
    for ours, peer, target in CHECKS:
        mine, theirs = results.get(ours, {}), results.get(peer, {})
        if "seconds" not in mine or "seconds" not in theirs:
            continue
        peer_seconds = theirs["seconds"] / theirs.get("sample", 1.0)  # scaled to all persons
        ratio = mine["seconds"] / peer_seconds
        checks.append({"ours": ours, "peer": peer, "ratio": ratio, "target": target,
                       "pass": ratio <= target})  # fmt: skip
    print("\n| measurement | query seconds | load seconds | peak RSS (MiB) |"
          "\n|---|---:|---:|---:|")  # fmt: skip
    for name, r in results.items():
        print(f"| {name} | {r.get('seconds', float('nan')):.2f} | "
              f"{r.get('load_seconds', float('nan')):.2f} | "
              f"{r.get('rss_mib', float('nan')):.0f} |")  # fmt: skip
    print()
    for c in checks:
        print(f"{c['ours']} / {c['peer']}: {c['ratio']:.3f} (target <= {c['target']}) "
              f"{'PASS' if c['pass'] else 'MISS'}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {"world": info, "results": results, "checks": checks,
              "load_average": os.getloadavg(), "at": stamp}  # fmt: skip
    (RESULTS / f"analytics-{stamp}.json").write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
