"""Pure validation and normalisation rules (no I/O)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seamline.errors import BadRequest
from seamline.events import EventRows, IngestContext, normalise_events, parse_request
from seamline.events.columns import ROW_COLUMNS, TIME_COLUMNS
from seamline.events.fast import fast_row
from seamline.events.timestamps import corrected_timestamp, parse_timestamp

RECEIVED = datetime(2026, 11, 23, 12, 0, 0)


def ctx(**kw: object) -> IngestContext:
    base: dict[str, object] = {
        "source_id": "src_1", "channel": "mobile", "unit": "retail", "received_at": RECEIVED,
    }  # fmt: skip
    base.update(kw)
    return IngestContext(**base)  # type: ignore[arg-type]


def one(event: dict[str, object], **kw: object) -> dict[str, object]:
    rows, failed = normalise_events([event], ctx(), **kw)  # type: ignore[arg-type]
    assert not failed, failed
    row = {name: values[0] for name, values in rows.columns.items()}
    for name in TIME_COLUMNS:  # the rows carry microseconds; compare as datetimes
        row[name] = rows.moment(name, 0)
    return row


def failure(event: object) -> tuple[str, str | None]:
    rows, failed = normalise_events([event], ctx())
    assert len(rows) == 0 and len(failed) == 1
    return failed[0].reason, failed[0].field


def test_skew_correction_uses_batch_sent_at() -> None:
    row = one(
        {"type": "track", "event": "A", "anonymousId": "a", "timestamp": "2026-11-23T13:00:00Z"},
        batch_sent_at="2026-11-23T13:00:05+00:00",
    )
    # device clock one hour fast: the event happened 5 s before arrival
    assert row["timestamp"] == datetime(2026, 11, 23, 11, 59, 55)
    assert row["original_timestamp"] == datetime(2026, 11, 23, 13, 0, 0)
    assert row["sent_at"] == datetime(2026, 11, 23, 13, 0, 5)
    assert row["received_at"] == RECEIVED


def test_event_sent_at_wins_over_batch() -> None:
    row = one(
        {"type": "track", "event": "A", "anonymousId": "a",
         "timestamp": "2026-11-23T11:00:00Z", "sentAt": "2026-11-23T11:00:10Z"},
        batch_sent_at="2026-11-23T11:59:00Z",
    )  # fmt: skip
    assert row["timestamp"] == datetime(2026, 11, 23, 11, 59, 50)


def test_no_sent_at_keeps_timestamp_and_no_timestamp_uses_received() -> None:
    row = one({"type": "track", "event": "A", "anonymousId": "a",
               "timestamp": "2026-11-20T08:00:00.250Z"})  # fmt: skip
    assert row["timestamp"] == datetime(2026, 11, 20, 8, 0, 0, 250000)
    row = one({"type": "track", "event": "A", "anonymousId": "a"})
    assert row["timestamp"] == RECEIVED and row["original_timestamp"] == RECEIVED


def test_import_keeps_timestamps() -> None:
    rows, _ = normalise_events(
        [{"type": "track", "event": "A", "userId": "u", "timestamp": "2025-01-01T00:00:00Z",
          "sentAt": "2025-01-02T00:00:00Z"}],
        ctx(keep_timestamps=True),
    )  # fmt: skip
    assert rows.moment("timestamp", 0) == datetime(2025, 1, 1)


def test_empty_and_blank_ids_are_missing_and_numbers_become_strings() -> None:
    row = one({"type": "track", "event": "A", "userId": "", "anonymousId": "  x  "})
    assert row["user_id"] is None and row["anonymous_id"] == "x"
    row = one({"type": "identify", "userId": 42})
    assert row["user_id"] == "42"


@pytest.mark.parametrize(
    ("event", "reason", "field"),
    [
        ({"type": "track", "event": "A"}, "no_user_anon_id", "userId"),
        ({"type": "track", "event": "A", "userId": "", "anonymousId": None},
         "no_user_anon_id", "userId"),
        ({"type": "track", "userId": "u"}, "missing_event", "event"),
        ({"type": "track", "userId": "u", "event": "  "}, "missing_event", "event"),
        ({"type": "alias", "userId": "u"}, "missing_previous_id", "previousId"),
        ({"type": "group", "userId": "u"}, "missing_group_id", "groupId"),
        ({"type": "jump", "userId": "u"}, "invalid_type", "type"),
        ({"type": "track", "event": "A", "userId": "u", "properties": [1]},
         "invalid_field", "properties"),
        ({"type": "identify", "userId": "u", "traits": "x"}, "invalid_field", "traits"),
        ({"type": "track", "event": "A", "userId": {"a": 1}}, "invalid_id", "userId"),
        ({"type": "track", "event": "A", "userId": "u", "timestamp": "yesterday"},
         "invalid_timestamp", "timestamp"),
        ({"type": "track", "event": "A", "userId": "u", "timestamp": 1700000000},
         "invalid_timestamp", "timestamp"),
        ("not an object", "invalid_event", None),
    ],
)  # fmt: skip
def test_per_event_rules(event: object, reason: str, field: str | None) -> None:
    assert failure(event) == (reason, field)


def test_one_bad_event_keeps_the_good_ones() -> None:
    rows, failed = normalise_events(
        [{"type": "track", "event": "A", "userId": "u"}, {"type": "track"},
         {"type": "page", "name": "Home", "anonymousId": "a"}],
        ctx(),
    )  # fmt: skip
    assert len(rows) == 2 and len(failed) == 1
    assert rows.columns["event"] == ["A", "Home"]


def test_context_merge_channel_override_and_columns() -> None:
    row = one(
        {"type": "screen", "name": "Card", "anonymousId": "a", "writeKey": "k",
         "context": {"channel": "web", "os": {"name": "iOS", "version": "18.1"},
                     "app": {"version": "5.2.0", "build": 520},
                     "device": {"id": "dev-1", "type": "ios"}}},
        batch_context={"library": {"name": "analytics-swift", "version": "1.6"},
                       "os": {"name": "ignored"}},
    )  # fmt: skip
    assert row["channel"] == "web" and row["unit"] == "retail"
    assert row["os_name"] == "iOS" and row["app_version"] == "5.2.0" and row["app_build"] == "520"
    assert row["library_name"] == "analytics-swift" and row["device_id"] == "dev-1"
    assert row["event"] == "Card" and "writeKey" not in str(row["context"])


def test_ip_is_filled_only_for_client_routes() -> None:
    event = {"type": "track", "event": "A", "anonymousId": "a"}
    rows, _ = normalise_events([event], ctx(client_ip="203.0.113.9", fill_ip=True))
    assert rows.columns["ip"] == ["203.0.113.9"]
    rows, _ = normalise_events([event], ctx(client_ip="203.0.113.9", fill_ip=False))
    assert rows.columns["ip"] == [None]


def test_missing_message_id_is_assigned() -> None:
    row = one({"type": "track", "event": "A", "anonymousId": "a"})
    assert str(row["message_id"]).startswith("sl-")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"{", "invalid_json"),
        (b'{"a": NaN}', "invalid_batch"),
        (b'{"batch": "x"}', "invalid_batch"),
        (b"[1, 2]", "invalid_batch"),
        (b'{"batch": [{"a": "\\ud800"}]}', "invalid_json"),
    ],
)
def test_request_level_errors(body: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(body, batch=True, max_events=10, max_event_bytes=1000)
    assert info.value.code in (code, "invalid_json")
    assert info.value.status == 400


def test_batch_limits() -> None:
    many = b'{"batch": [' + b",".join([b"{}"] * 11) + b"]}"
    with pytest.raises(BadRequest, match="limit is 10"):
        parse_request(many, batch=True, max_events=10, max_event_bytes=1000)
    big = b'{"batch": [{"p": "' + b"x" * 2000 + b'"}]}'
    with pytest.raises(BadRequest, match=r"batch\[0\]"):
        parse_request(big, batch=True, max_events=10, max_event_bytes=1000)


def test_timestamps() -> None:
    assert parse_timestamp("2026-11-23T10:00:00+02:00", "t") == datetime(2026, 11, 23, 8)
    assert parse_timestamp(None, "t") is None
    with pytest.raises(ValueError, match="outside"):
        parse_timestamp("1970-01-01T00:00:00Z", "timestamp")
    # 20 characters ending in Z, like the SDKs' form, but with an offset too (found by atheris)
    with pytest.raises(ValueError, match=r"sentAt .* not an ISO-8601"):
        parse_timestamp("2026-11-23T10+00:01Z", "sentAt")
    assert corrected_timestamp(None, None, RECEIVED) == RECEIVED


# -- the fast path stores what the general path stores ------------------------------------
_JSON_COLUMNS = ("properties", "traits", "context", "integrations", "metadata")
_scalars = st.one_of(st.none(), st.just(""), st.just("  "), st.text(max_size=6),
                     st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                     st.booleans())  # fmt: skip
_objects = st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "plan"]), _scalars,
                                                max_size=3), _scalars)  # fmt: skip
_times = st.one_of(st.none(), st.just(""), st.just("2026-11-23T11:59:00.000Z"),
                   st.just("2026-11-23T11:00:00+02:00"), st.just("yesterday"),
                   st.integers())  # fmt: skip
_sections = st.one_of(st.none(), st.just("flat"), st.fixed_dictionaries(
    {}, optional={"name": _scalars, "version": _scalars, "id": _scalars,
                  "build": _scalars}))  # fmt: skip


@st.composite
def wire_events(draw: st.DrawFn) -> dict[str, object]:
    keys = {
        "type": st.one_of(st.sampled_from(["track", "identify", "page", "screen", "group",
                                           "alias", "bogus"]), _scalars),
        "event": _scalars, "name": _scalars, "category": _scalars,
        "userId": _scalars, "anonymousId": _scalars, "messageId": _scalars,
        "groupId": _scalars, "previousId": _scalars,
        "timestamp": _times, "originalTimestamp": _times, "sentAt": _times,
        "properties": _objects, "traits": st.one_of(_objects, st.fixed_dictionaries(
            {"email": _scalars, "phone": _scalars})),
        "integrations": _objects, "_metadata": _objects,
        "context": st.one_of(_objects, st.fixed_dictionaries({}, optional={
            "os": _sections, "app": _sections, "device": _sections, "library": _sections,
            "ip": _scalars, "channel": _scalars, "unit": _scalars, "locale": _scalars,
            "userAgent": _scalars, "direct": _scalars, "ignoreSentAt": _scalars,
            "traits": st.one_of(_scalars, st.fixed_dictionaries(
                {}, optional={"email": _scalars, "phone": _scalars}))})),
    }  # fmt: skip
    ids = st.one_of(st.text(min_size=1, max_size=6), st.integers(0, 99))
    texts = st.one_of(st.none(), st.text(max_size=6))
    tidy = {
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
        "event": st.text(min_size=1, max_size=6), "name": texts,
        "userId": ids, "anonymousId": ids, "messageId": ids, "groupId": ids, "previousId": ids,
        "timestamp": st.just("2026-11-23T11:59:00.000Z"), "sentAt": st.just("2026-11-23T11:59:30Z"),
        "properties": st.dictionaries(st.sampled_from(["a", "plan"]), texts, max_size=2),
        "traits": st.fixed_dictionaries({}, optional={"email": texts, "phone": texts}),
        "context": st.fixed_dictionaries({}, optional={
            "os": st.fixed_dictionaries({}, optional={"name": texts, "version": texts}),
            "device": st.fixed_dictionaries({}, optional={"id": texts, "model": texts}),
            "app": st.fixed_dictionaries({}, optional={"build": st.integers(0, 9)}),
            "ip": texts, "channel": texts, "direct": st.booleans(), "ignoreSentAt": st.booleans(),
            "traits": st.fixed_dictionaries({}, optional={"email": texts, "phone": texts})}),
    }  # fmt: skip
    # mostly well formed (the fast path), with a few fields of any shape (the general path)
    event = {key: draw(tidy[key]) for key in sorted(draw(st.sets(st.sampled_from(sorted(tidy)))))}
    for key in sorted(draw(st.sets(st.sampled_from(sorted(keys)), max_size=2))):
        event[key] = draw(keys[key])
    return event


def _comparable(rows: EventRows) -> list[dict[str, object]]:
    out = []
    for i in range(len(rows)):
        row = {name: values[i] for name, values in rows.columns.items()}
        for name in _JSON_COLUMNS:
            row[name] = None if row[name] is None else json.loads(row[name])  # type: ignore[arg-type]
        if str(row["message_id"]).startswith("sl-"):
            row["message_id"] = "sl-(assigned)"
        out.append(row)
    return out


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_events(), min_size=1, max_size=4), st.booleans(),
       st.sampled_from([None, "track", "page"]), _times, st.booleans())  # fmt: skip
def test_fast_path_equals_general_path(events: list[dict[str, object]], fill_ip: bool,
                                       forced: str | None, batch_sent_at: object,
                                       keep: bool) -> None:  # fmt: skip
    raws = [json.dumps(event).encode() for event in events]
    context = ctx(client_ip="203.0.113.9", fill_ip=fill_ip, retry_count=0, keep_timestamps=keep)
    options: dict[str, object] = {"forced_type": forced, "batch_sent_at": batch_sent_at}
    fast_rows, fast_failed = normalise_events(raws, context, **options)  # type: ignore[arg-type]
    slow_rows, slow_failed = normalise_events(raws, context, fast=False,
                                              **options)  # type: ignore[arg-type]  # fmt: skip
    assert _comparable(fast_rows) == _comparable(slow_rows)
    assert [(f.reason, f.field, f.message) for f in fast_failed] == [
        (f.reason, f.field, f.message) for f in slow_failed
    ]


def test_fast_path_takes_sdk_events_and_keeps_their_json() -> None:
    event = {"type": "screen", "name": "Card", "anonymousId": "a", "messageId": "m1",
             "properties": {"plan": "pro", "n": 2}, "integrations": {},
             "context": {"app": {"version": "5.2.0", "build": 520}, "ip": "198.51.100.7",
                         "traits": {"email": "x@y.example"}}}  # fmt: skip
    row = fast_row(json.dumps(event).encode(), ctx(client_ip="203.0.113.9", fill_ip=True), None)
    assert row is not None
    values = dict(zip(ROW_COLUMNS, row, strict=True))
    assert values["app_build"] == "520" and values["ip"] == "198.51.100.7"
    assert json.loads(values["properties"]) == {"plan": "pro", "n": 2}
    assert values["integrations"] is None and values["contact_email"] == "x@y.example"
    # an unusual event leaves it to the general path, which names the problem
    assert fast_row(b'{"type": "track", "userId": true}', ctx(), None) is None


def test_a_context_decoded_once_still_follows_each_requests_address() -> None:
    """The fast path remembers decoded contexts; the request's address and whether it fills
    ``context.ip`` are part of what it remembers them by, and a repeated context comes
    back as the same text object (pickle then sends it once per body)."""
    event = {"type": "track", "event": "Opened", "userId": "u", "messageId": "m",
             "context": {"app": {"name": "Bank"}, "locale": "en-GB"}}  # fmt: skip
    raw = json.dumps(event).encode()
    seen = {}
    for address, fill in (("203.0.113.9", True), ("198.51.100.7", True), ("203.0.113.9", False)):
        rows = [fast_row(raw, ctx(client_ip=address, fill_ip=fill), None) for _ in range(2)]
        assert rows[0] is not None and rows[1] is not None
        first, second = (dict(zip(ROW_COLUMNS, row, strict=True)) for row in rows)
        assert first["context"] is second["context"]
        assert first["app_name"] == "Bank" and first["locale"] == "en-GB"
        seen[(address, fill)] = (first["ip"], json.loads(first["context"]).get("ip"))
    assert seen == {("203.0.113.9", True): ("203.0.113.9", "203.0.113.9"),
                    ("198.51.100.7", True): ("198.51.100.7", "198.51.100.7"),
                    ("203.0.113.9", False): (None, None)}  # fmt: skip
