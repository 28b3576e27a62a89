"""One fuzz target for the request parser and the per-event rules, run two ways.

:func:`target` feeds bytes to :func:`seamline.events.parse_request` and
:func:`seamline.events.normalise_events` the way the collector does, and checks:

- the only exceptions are seamline's own (:class:`seamline.errors.SeamlineError`,
  which the web layer turns into a 400), never anything else (a 500);
- conservation: every parsed event comes out once, as a row or as a failed event;
- every row can be stored: its strings encode as UTF-8 (a lone surrogate would fail
  the whole group commit in DuckDB) and it has a message id.

``python tests/fuzz_events.py [libFuzzer flags] [corpus dirs]`` runs it under atheris
(coverage-guided, instrumented seamline.events); ``tests/test_property_fuzz.py`` runs it
under hypothesis as well, and runs atheris for a bounded time when it is installed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

MAX_EVENTS = 2500
MAX_EVENT_BYTES = 32 * 1024 + 1600
FORCED = (None, "track", "identify", "page", "screen", "group", "alias")

SEEDS = [
    b'{"batch":[{"type":"track","event":"Order Completed","userId":"u1","messageId":"m1",'
    b'"timestamp":"2026-11-23T10:00:00Z","properties":{"price":3.5}}],'
    b'"sentAt":"2026-11-23T10:00:01Z","context":{"library":{"name":"x"}}}',
    b'{"batch":[{"type":"identify","userId":"u1","traits":{"email":"A@B.io","phone":"+44 7700 '
    b'900123"}},{"type":"alias","userId":"u1","previousId":"a1"},{"type":"group","userId":"u1",'
    b'"groupId":"g1"},{"type":"page","anonymousId":"a1","name":"Home"}]}',
    b'{"type":"screen","anonymousId":"a1","name":"Cart","context":{"device":{"id":"d1"},'
    b'"traits":{"email":"x@y.z"},"ignoreSentAt":true},"sentAt":"2026-11-23T10:00:00+02:00"}',
    b'{"writeKey":"sl_wk_x","batch":[{"type":"track","userId":12,"event":"E","integrations":{}}]}',
]
DICTIONARY = [
    '"batch"', '"type"', '"track"', '"identify"', '"page"', '"screen"', '"group"', '"alias"',
    '"userId"', '"anonymousId"', '"messageId"', '"event"', '"timestamp"', '"sentAt"',
    '"properties"', '"traits"', '"context"', '"previousId"', '"groupId"', '"email"', '"phone"',
    '"device"', '"ignoreSentAt"', '"writeKey"', '"integrations"', '"\\ud800"', '"\\u0000"',
    "null", "true", "false", "NaN", "1e999", '"2026-11-23T10:00:00Z"', '"0001-01-01"',
]  # fmt: skip


def target(data: bytes) -> tuple[int, int, int]:
    """Run one input; returns (events parsed, rows, failed). Raises on a finding."""
    from seamline.errors import SeamlineError
    from seamline.events import IngestContext, normalise_events, parse_request

    if not data:
        return 0, 0, 0
    mode, body = data[0], data[1:]
    batch = mode % 2 == 0
    forced = None if batch else FORCED[(mode // 2) % len(FORCED)]
    try:
        parsed = parse_request(body, batch=batch, max_events=MAX_EVENTS,
                               max_event_bytes=MAX_EVENT_BYTES)  # fmt: skip
    except SeamlineError:
        return 0, 0, 0  # a 400 with a message: allowed
    ctx = IngestContext(
        source_id="src_fuzz", channel="mobile", unit=None,
        received_at=datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC).replace(tzinfo=None),
        client_ip="127.0.0.1", fill_ip=mode % 3 == 0, keep_timestamps=mode % 5 == 0,
        retry_count=mode % 4,
    )  # fmt: skip
    rows, failed = normalise_events(
        parsed.events, ctx, forced_type=forced, batch_sent_at=parsed.sent_at,
        batch_context=parsed.context, batch_integrations=parsed.integrations,
    )  # fmt: skip
    assert len(rows) + len(failed) == len(parsed.events), "an event was lost or doubled"
    for name, values in rows.columns.items():
        for value in values:
            _storable(name, value)
    for message_id in rows.columns["message_id"]:
        assert isinstance(message_id, str) and message_id, f"bad message id {message_id!r}"
    for failure in failed:
        assert failure.reason and failure.message, failure
        _storable("failed.raw", failure.raw)
        _storable("failed.message", failure.message)
    return len(parsed.events), len(rows), len(failed)


def _storable(name: str, value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise AssertionError(f"column {name} holds a string DuckDB refuses: {exc}") from None


def main() -> None:
    import atheris

    with atheris.instrument_imports(include=["seamline.events", "seamline.errors"]):
        import seamline.events  # noqa: F401

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
