"""The store's share of ingest: DuckDB append + COMMIT per event, in-process, no HTTP.

The server answers ``200`` only after its one writer thread has appended a group of
events and committed it (fsync'd WAL), so this serial path bounds durable ingest
whatever the rest costs: ``1e6 / (us per event)`` events/s on one writer. The bench's
own 100-event bodies are parsed once with seamline's ``parse_body``; each group reuses
those rows with fresh message ids and goes through:

- ``events``: what the writer runs for a group of new events: the keys' fingerprints
  looked up in its stored-key index (``seamline.store.keyindex``), ``Store.append_events``
  with a plain ``INSERT`` into the real events table (dedupe primary key), the index
  updated after the COMMIT;
- ``events-conflict``: ``Store.append_events`` through ``ON CONFLICT DO NOTHING
  RETURNING``, what the writer runs for a group that may hold a duplicate (and what it ran
  for every group before the index);
- ``no-key``: the same columns into a table without the primary key;
- ``no-key-text``: that, with the five JSON columns as plain ``VARCHAR`` (DuckDB then
  does not validate them);
- ``raw``: only a 128-bit key (primary key) and the body of each event as one text
  column, the least a durable log of the events could store.

    .venv/bin/python bench/store_append.py [--groups 40] [--group-events 2800]

``events`` and ``events-conflict`` build their Arrow table inside ``append_events``, so
their ``arrow`` phase is the ``BEGIN`` (and for ``events`` the index lookup). The
first groups fill the table (``--prefill`` events) and are not measured. Results go
to stdout and ``bench/results/store-append-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import build_templates  # noqa: E402

from seamline.events import EventRows  # noqa: E402
from seamline.events.bodies import ParseJob, assign_source, parse_body  # noqa: E402
from seamline.events.columns import EVENT_COLUMNS  # noqa: E402
from seamline.events.timestamps import utcnow  # noqa: E402
from seamline.store import Store  # noqa: E402
from seamline.store.keyindex import StoredKeyIndex, fingerprints  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VARIANTS = ("events", "events-conflict", "no-key", "no-key-text", "raw")


def parsed_rows(batches: int) -> list[EventRows]:
    out = []
    templates = build_templates("bench-key", 100, 42)
    for i in range(batches):
        body = f"{i:08d}".encode().join(templates[i % len(templates)])
        parsed = parse_body(ParseJob(body, True, None, utcnow(), max_events=2500,
                                     max_event_bytes=32768, skew_flag_seconds=600,
                                     client_ip="127.0.0.1", fill_ip=True))  # fmt: skip
        assign_source(parsed, "src-bench", "mobile", None)
        out.append(parsed.rows)
    return out


def group(base: list[EventRows], number: int, size: int) -> EventRows:
    rows = EventRows()
    for k in range(size // 100):
        rows.extend(base[(number * size // 100 + k) % len(base)])
    rows.columns["message_id"] = [f"g{number}-{k}" for k in range(len(rows))]
    return rows


def run(variant: str, base: list[EventRows], groups: int, size: int, prefill: int,
        threshold: str) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp))
        store.set_checkpoint_threshold(threshold)
        con = store.writer_connection()
        if variant == "no-key":
            con.execute("CREATE TABLE bare AS SELECT * FROM events LIMIT 0")
        elif variant == "no-key-text":  # the JSON columns as plain VARCHAR: no validation
            con.execute("CREATE TABLE bare AS SELECT * FROM events LIMIT 0")
            for name in ("properties", "traits", "context", "integrations", "metadata"):
                con.execute(f"ALTER TABLE bare ALTER {name} TYPE VARCHAR")
        elif variant == "raw":
            con.execute("CREATE TABLE bare (dedup_key UHUGEINT PRIMARY KEY, body VARCHAR)")
        columns = ", ".join(EVENT_COLUMNS)
        into_bare = f"INSERT INTO bare ({columns}) SELECT {columns} FROM _staged"
        index = StoredKeyIndex()
        insert = {
            "no-key": into_bare,
            "no-key-text": into_bare,
            "raw": "INSERT INTO bare SELECT md5_number(source_id || chr(0) || message_id), "
                   "concat_ws(',', properties, context, traits) FROM _staged",
        }.get(variant)  # fmt: skip
        warm = max(1, prefill // size)
        wall = {"arrow": 0.0, "append": 0.0, "commit": 0.0}
        cpu = 0.0
        events = 0
        for number in range(warm + groups):
            rows = group(base, number, size)
            started, thread_started = time.perf_counter(), time.thread_time()
            con.execute("BEGIN")
            keys = None
            if variant == "events":  # as the writer: look the keys up, insert plainly
                keys = fingerprints(rows.columns["source_id"], rows.columns["message_id"])
                assert not index.any_stored(keys)
                arrowed = time.perf_counter()
                Store.append_events(con, rows, [], {}, all_new=True)
            elif insert is None:
                arrowed = time.perf_counter()
                Store.append_events(con, rows, [], {})  # builds its Arrow table itself
            else:
                staged = rows.to_arrow()
                arrowed = time.perf_counter()
                con.register("_staged", staged)
                con.execute(insert)
                con.unregister("_staged")
            appended = time.perf_counter()
            con.execute("COMMIT")
            if keys is not None:
                index.add(keys)
            committed = time.perf_counter()
            if number >= warm:
                wall["arrow"] += arrowed - started
                wall["append"] += appended - arrowed
                wall["commit"] += committed - appended
                cpu += time.thread_time() - thread_started
                events += len(rows)
        con.close()
        store.close()
    per = {phase: round(1e6 * seconds / events, 2) for phase, seconds in wall.items()}
    total = sum(wall.values()) * 1e6 / events
    return {"variant": variant, "us_per_event": per, "total_us": round(total, 2),
            "writer_thread_cpu_us": round(1e6 * cpu / events, 2),
            "one_writer_ceiling_events_per_s": round(1e6 / total)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=40, help="measured groups per variant")
    parser.add_argument("--group-events", type=int, default=2800)
    parser.add_argument("--prefill", type=int, default=200_000)
    parser.add_argument("--checkpoint-threshold", default="256MB")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    size = max(100, args.group_events // 100 * 100)
    base = parsed_rows(64)
    results = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            parser.error(f"unknown variant {variant!r}; use {', '.join(VARIANTS)}")
        result = run(variant, base, args.groups, size, args.prefill, args.checkpoint_threshold)
        results.append(result)
        phases = ", ".join(f"{k} {v}" for k, v in result["us_per_event"].items())
        print(f"{variant:>15}: {result['total_us']:6.2f} us/event wall ({phases}); writer "
              f"thread CPU {result['writer_thread_cpu_us']} us; one writer's ceiling "
              f"{result['one_writer_ceiling_events_per_s']:,} events/s")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"store-append-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({"group_events": size, "groups": args.groups,
                               "prefill": args.prefill,
                               "checkpoint_threshold": args.checkpoint_threshold,
                               "results": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
