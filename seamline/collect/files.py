"""Read exported events from files, in chunks, for ``seamline import``.

Formats, chosen by extension (``.gz`` is undone first):
- ``.jsonl`` / ``.ndjson`` / ``.json``: one JSON value per line, each an event or a
  Segment batch ``{"batch": [...]}``; a ``.json`` file may also be one array or one batch.
- ``.csv``: one event per row; columns named like Segment fields (``userId`` or
  ``user_id``), nested ones with dots (``properties.plan``), or JSON text in
  ``properties`` / ``context`` / ``traits``.
- ``.parquet``: one event per row, columns as for CSV (structs kept as objects).

A line that is not JSON cannot become an event; it is reported with its line number.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from seamline.errors import BadRequest

CHUNK_EVENTS = 2000
_ALIASES = {
    "user_id": "userId", "anonymous_id": "anonymousId", "message_id": "messageId",
    "original_timestamp": "originalTimestamp", "sent_at": "sentAt", "received_at": "receivedAt",
    "group_id": "groupId", "previous_id": "previousId",
}  # fmt: skip
_JSON_COLUMNS = {"properties", "context", "traits", "integrations"}
FORMATS = ("jsonl", "csv", "parquet")


@dataclass
class Unreadable:
    """Lines of a file that could not become events."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(where)


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if last == ".csv":
        return "csv"
    if last == ".parquet":
        return "parquet"
    raise BadRequest(
        f"Cannot tell the format of {path.name}: use .jsonl, .ndjson, .json, .csv or .parquet "
        "(optionally .gz).",
        code="unknown_format",
    )


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace", newline="")


def _events_of(value: Any) -> list[Any]:
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        shared = {k: value[k] for k in ("context", "integrations")
                  if isinstance(value.get(k), dict)}  # fmt: skip
        out = []
        for event in value["batch"]:
            if isinstance(event, dict):
                for key, extra in shared.items():
                    own = event.get(key)
                    event[key] = {**extra, **own} if isinstance(own, dict) else extra
            out.append(event)
        return out
    if isinstance(value, list):
        return value
    return [value]


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat CSV/Parquet row to a Segment event.

    ``{"properties.plan": "pro", "user_id": "u1"}`` -> ``{"properties": {"plan": "pro"},
    "userId": "u1"}``.
    """
    event: dict[str, Any] = {}
    for raw_key, value in flat.items():
        if value is None or value == "" or raw_key is None:
            continue
        key = _ALIASES.get(raw_key, raw_key)
        if key in _JSON_COLUMNS and isinstance(value, str):
            with contextlib.suppress(msgspec.DecodeError):  # validation names the field
                value = msgspec.json.decode(value)
        parts = key.split(".")
        target = event
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = target[part] = {}
            target = nxt
        target[parts[-1]] = value
    if "type" not in event and "event" in event:
        event["type"] = "track"
    return event


def read_events(
    path: Path, unreadable: Unreadable, progress: Callable[[int], None] | None = None
) -> Iterator[list[Any]]:
    """Yield chunks of decoded events; ``progress(n)`` gets bytes (or rows) consumed."""
    kind = detect_format(path)
    if kind == "parquet":
        yield from _read_parquet(path, progress)
        return
    with _open_text(path) as handle:
        if kind == "csv":
            yield from _read_csv(handle, progress)
            return
        if path.name.lower().removesuffix(".gz").endswith(".json"):
            text = handle.read()
            try:
                whole = msgspec.json.decode(text)
            except msgspec.DecodeError:
                whole = None
            if whole is not None and not (isinstance(whole, dict) and "batch" not in whole):
                events = _events_of(whole)
                for start in range(0, len(events), CHUNK_EVENTS):
                    yield events[start : start + CHUNK_EVENTS]
                if progress:
                    progress(len(text.encode()))
                return
            handle = io.StringIO(text)
        chunk: list[Any] = []
        for number, line in enumerate(handle, start=1):
            if progress:
                progress(len(line.encode()))
            if not line.strip():
                continue
            try:
                chunk.extend(_events_of(msgspec.json.decode(line)))
            except msgspec.DecodeError as exc:
                unreadable.add(f"line {number}: {exc}")
                continue
            if len(chunk) >= CHUNK_EVENTS:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _read_csv(handle: IO[str], progress: Callable[[int], None] | None) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in csv.DictReader(handle):
        if progress:
            progress(sum(len(str(v)) + 1 for v in row.values()))
        chunk.append(_nest(row))
        if len(chunk) >= CHUNK_EVENTS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_parquet(path: Path, progress: Callable[[int], None] | None) -> Iterator[list[Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    total_rows = parquet.metadata.num_rows or 1
    size = path.stat().st_size
    for batch in parquet.iter_batches(batch_size=CHUNK_EVENTS):
        rows = [_nest(row) for row in batch.to_pylist()]
        if progress:
            progress(int(size * len(rows) / total_rows))
        yield rows
