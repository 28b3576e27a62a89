"""The writer's ceiling: the real ``Writer`` fed parsed bodies in process, nothing else running.

``seamline serve`` answers ``200`` only after its one writer thread has stitched a group's
identities, looked its keys up in the stored-key index, appended it and committed it.
Here that ``Writer`` gets the bench's 100-event bodies already parsed, as a parse worker
hands them over (``parse_body`` with the source known, so the keys' fingerprints come
along, then a pickle round trip), from one thread that keeps its queue full. There is no
HTTP, no parse worker and no other thread wanting the GIL or a core, so the rate is the
most the server could commit with this writer on this machine; ``bench/ingest.py``'s rate
is lower by what the rest of the server costs the writer.

    .venv/bin/python bench/writer.py [--bodies 3000] [--group-events 5000]

Prints events/s, the process's CPU per event (the writer thread and DuckDB's threads) and
the writer's phases; results go to ``bench/results/writer-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import build_templates  # noqa: E402

from seamline.events.bodies import ParsedBody, ParseJob, assign_source, parse_body  # noqa: E402
from seamline.events.timestamps import utcnow  # noqa: E402
from seamline.store import Store, Writer  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SOURCE = "src-bench"


def bodies(count: int) -> list[ParsedBody]:
    """``count`` distinct parsed bodies (fresh message ids), as a worker answers them."""
    templates = build_templates("bench-key", 100, 42)
    received = utcnow()
    out = []
    for i in range(count):
        body = f"w{i:08d}".encode().join(templates[i % len(templates)])
        job = ParseJob(body, True, None, received, max_events=2500, max_event_bytes=32768,
                       skew_flag_seconds=600, client_ip="127.0.0.1", fill_ip=True,
                       source_id=SOURCE)  # fmt: skip
        parsed: ParsedBody = pickle.loads(pickle.dumps(parse_body(job), protocol=5))
        assign_source(parsed, SOURCE, "mobile", None)
        out.append(parsed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=3000, help="100-event bodies (3000)")
    parser.add_argument("--group-events", type=int, default=5000,
                        help="the writer's group size (the server's default, 5000)")  # fmt: skip
    parser.add_argument("--checkpoint-threshold", default="256MB")
    args = parser.parse_args()
    work = bodies(args.bodies)
    events = sum(len(body.rows) for body in work)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp))
        store.set_checkpoint_threshold(args.checkpoint_threshold)
        writer = Writer(store, group_commit_events=args.group_events).start()
        started, cpu = time.perf_counter(), time.process_time()
        futures = []
        for body in work:
            while writer.queued_events > 4 * args.group_events:  # full, not overflowing
                time.sleep(0.0005)
            futures.append(writer.submit(body.rows, body.failed, digests=body.key_digests))
        stored = sum(future.result().stored for future in futures)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        profile = writer.profile.to_dict()
        writer.stop()
        store.close()
    assert stored == events, f"stored {stored} of {events} events"
    result = {
        "events": events,
        "events_per_s": round(events / seconds),
        "process_cpu_us_per_event": round(1e6 * cpu / events, 2),
        "group_events": args.group_events,
        "checkpoint_threshold": args.checkpoint_threshold,
        "writer": profile,
    }
    phases = ", ".join(f"{k} {v}" for k, v in profile["wall_us_per_event"].items())
    print(f"writer alone: {result['events_per_s']:,} events/s ({events:,} events); process "
          f"CPU {result['process_cpu_us_per_event']} us an event; {profile['events_per_group']:,} "
          f"events a group, wall us an event: {phases}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"writer-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
