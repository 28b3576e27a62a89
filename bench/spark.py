"""Spark local[N] beside DuckDB per analysis, over the same world, and the lake export rate.

Uses the cached benchmark world of ``bench/world.py`` (built on first use), exports it
to a Parquet lake (timed: the export rate), then runs each analysis on the workspace
(DuckDB) and on the lake (Spark), checks the answers are identical, and writes
``bench/results/spark-<events>.json``.

    .venv/bin/python bench/spark.py --events 1000000 --master 'local[2]'
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.world import RESULTS, ensure_world  # noqa: E402
from seamline.demo.bulk import FUNNEL  # noqa: E402

# Each takes (workspace, end): a fixed end, so answers that depend on the clock (attempts
# still in progress, retention periods observed) do not move between the two runs.
ANALYSES: dict[str, Callable[[Any, datetime], Any]] = {
    "funnel (5 steps, by app_version)": lambda w, end: w.funnel(list(FUNNEL), "1d",
                                                                "app_version", end=end),
    "journeys": lambda w, end: w.journeys(end=end),
    "paths (3 after App Opened)": lambda w, end: w.paths("App Opened", end=end),
    "retention (daily, 7)": lambda w, end: w.retention(period="day", periods=7, end=end),
    "outcomes (weekly)": lambda w, end: w.outcomes(end=end),
    "seams (2h)": lambda w, end: w.seams("2h", end=end),
}


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    parser.add_argument("--identity", action="store_true", help="Also time the identity rebuild.")
    parser.add_argument("--only", default=None,
                        help="Run only the analyses whose name starts with this, e.g. identity.")
    parser.add_argument("--driver-memory", default="6g",
                        help="JVM heap (local mode: the driver is the executor too).")
    args = parser.parse_args()

    import seamline
    from seamline.store.spark import default_config, session

    world, info = ensure_world(args.events, args.seed)
    lake = world / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    with seamline.open(world / "workspace") as ws:
        export_seconds, manifest = timed(lambda: ws.lake_export(lake))
        written = manifest["events_written"]
        print(f"lake export: {written:,} events in {export_seconds:.1f} s "
              f"({written / export_seconds:,.0f} events/s)")  # fmt: skip
        config = {**default_config(args.partitions), "spark.driver.memory": args.driver_memory,
                  "spark.driver.maxResultSize": "0"}  # fmt: skip
        started, spark = timed(lambda: session(args.master, config))
        print(f"spark session ({args.master}): {started:.1f} s")
        with seamline.open_lake(lake, spark=spark, settings=ws.settings) as lw:
            analyses = dict(ANALYSES)
            if args.identity:
                analyses["identity rebuild"] = lambda w, end: w.rebuild_identity()
            if args.only:
                analyses = {k: v for k, v in analyses.items() if k.startswith(args.only)}
            last = ws.store.query_one("SELECT max(timestamp) FROM events")
            end = (last[0] if last and last[0] else datetime(2100, 1, 1)) + timedelta(seconds=1)
            for name, run in analyses.items():
                duck_seconds, expected = timed(lambda run=run: run(ws, end))
                spark_seconds, got = timed(lambda run=run, lw=lw: run(lw, end))
                if hasattr(expected, "to_dict"):
                    expected, got = expected.to_dict(), got.to_dict()
                if name == "identity rebuild":  # example lists come in any order
                    for report in (expected, got):
                        for example in report["examples"]:
                            example["persons"] = sorted(example["persons"])
                same = expected == got
                if not same:
                    keys = [k for k in expected if expected.get(k) != got.get(k)]
                    print(f"  {name}: differs in {keys}")
                rows.append({"analysis": name, "duckdb_seconds": round(duck_seconds, 2),
                             "spark_seconds": round(spark_seconds, 2),
                             "identical": same})  # fmt: skip
                ratio = spark_seconds / max(duck_seconds, 1e-9)
                print(f"{name:36} duckdb {duck_seconds:7.2f} s   spark {spark_seconds:7.2f} s  "
                      f"x{ratio:5.1f}  identical={same}")  # fmt: skip
        spark.stop()
    RESULTS.mkdir(exist_ok=True)
    result = {"events": written, "persons": info["persons"], "master": args.master,
              "shuffle_partitions": args.partitions,
              "lake_export_seconds": round(export_seconds, 1),
              "lake_export_events_per_second": round(written / export_seconds),
              "spark_session_seconds": round(started, 1), "analyses": rows,
              "machine": "2 cores shared with other engineers' work (contended)"}  # fmt: skip
    only = f"-{args.only.split()[0]}" if args.only else ""  # keeps the full run's file
    path = RESULTS / f"spark-{args.events}{only}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
