"""The benchmark world: generated once per (events, seed) and cached under ``bench/.data/``.

``ensure_world(events, seed)`` returns the directory holding

- ``workspace/``: a seamline data directory (DuckDB file) with the events, sources and
  the person map, loaded in bulk (:mod:`seamline.demo.bulk`, :mod:`seamline.store.bulk`);
- ``events.parquet``: the same events for the peers (person = the stitched person id,
  ts, event, channel, app_version, type), sorted by person and time;
- ``world.json``: its sizes.

    .venv/bin/python bench/world.py --events 2000000     # build (or show) a world
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results"


def world_dir(events: int, seed: int) -> Path:
    return DATA / f"world-{events}-{seed}"


def ensure_world(events: int, seed: int = 42) -> tuple[Path, dict[str, Any]]:
    target = world_dir(events, seed)
    info_file = target / "world.json"
    if info_file.exists():
        return target, json.loads(info_file.read_text())
    from seamline.demo.bulk import SOURCES, generate, person_ids
    from seamline.store import Store
    from seamline.store.bulk import load_world

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    started = time.perf_counter()
    world = generate(events, seed)
    persons = person_ids(world.table)
    generated = time.perf_counter() - started
    store = Store.open(target / "workspace")
    try:
        stored = load_world(store, world.table.drop_columns(["component"]), persons, SOURCES)
        with store.cursor() as cur:
            cur.execute(f"""
                COPY (SELECT resolved_person_id AS person, timestamp AS ts, event, channel,
                             app_version, type
                      FROM events_resolved ORDER BY person, ts)
                TO '{target / "events.parquet"}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)
            """)
            n_persons = cur.execute(
                "SELECT count(DISTINCT resolved_person_id) FROM events_resolved").fetchall()[0]
    finally:
        store.close()
    info = {"events": stored, "persons": int(n_persons[0]) if n_persons else 0,
            "simulated_people": world.persons, "seed": seed,
            "generate_seconds": round(generated, 1),
            "build_seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    info_file.write_text(json.dumps(info, indent=2))
    return target, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    path, info = ensure_world(args.events, args.seed)
    print(path, json.dumps(info))


if __name__ == "__main__":
    main()
