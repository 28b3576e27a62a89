"""End-to-end compatibility with what real Segment SDKs put on the wire.

Every test talks to a real ``seamline serve`` on 127.0.0.1 (the ``server`` fixture)
and then reads the DuckDB file directly, after stopping the server, to check what
was stored. Nothing of Seamline's is mocked. The requests follow
``shared/specs/segment-ingest.md`` §2, §3, §5, §6 and the test matrix in §11:

* the real ``segment-analytics-python`` client (sync and async, gzip on and off);
* the real ``@segment/analytics-node`` client, driven by ``tests/sdk/node/send.mjs``;
* hand-built requests shaped exactly like analytics-kotlin, analytics-swift and
  analytics.js (standard and batching mode) send them;
* the settings endpoint, clock-skew correction, retry dedupe across a restart, and
  every ingest route with and without a trailing slash (never a redirect).
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Server

NODE_DIR = Path(__file__).parent / "sdk" / "node"
DATABASE_FILE = "seamline.duckdb"


# -- helpers ---------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def iso_z(moment: datetime) -> str:
    """JS/Swift/Kotlin style: ``2026-11-23T10:00:00.123Z`` (device clock, UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_z(text: str) -> datetime:
    """An ISO-8601 UTC string as the naive UTC datetime the store keeps."""
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def query(server: Server, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Stop the server (so it checkpoints and releases the file) and read the database."""
    if server.proc is not None:
        server.stop()
    con = duckdb.connect(str(server.data / DATABASE_FILE), read_only=True)
    try:
        cursor = con.execute(sql, params or [])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def stored_events(server: Server) -> list[dict[str, Any]]:
    rows = query(server, "SELECT * FROM events ORDER BY received_at, message_id")
    failed = query(server, "SELECT reason, field, message, raw FROM failed_events")
    assert failed == [], f"events were rejected: {failed}"
    return rows


def by_message_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = [row["message_id"] for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"stored more than once: {duplicates}"
    return {row["message_id"]: row for row in rows}


def assert_skew_corrected(row: dict[str, Any]) -> None:
    """Segment's rule: timestamp = receivedAt - (sentAt - originalTimestamp), exactly."""
    assert row["sent_at"] is not None and row["original_timestamp"] is not None
    expected = row["received_at"] - (row["sent_at"] - row["original_timestamp"])
    assert row["timestamp"] == expected, row


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.json() == {"success": True}


def gzip_chunks(text: str, size: int = 97) -> Iterator[bytes]:
    """A gzip stream yielded in small pieces, so httpx sends it chunked (no Content-Length)."""
    compressor = zlib.compressobj(wbits=31)  # 31: gzip container
    data = text.encode()
    for start in range(0, len(data), size):
        yield compressor.compress(data[start : start + size]) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


# -- 1. segment-analytics-python -----------------------------------------------------------


PYTHON_MODES = [(False, False), (False, True), (True, False), (True, True)]  # sync, gzip


def send_with_python_sdk(url: str, write_key: str, sync_mode: bool, use_gzip: bool, tag: str
                         ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every call type through a real ``segment.analytics.Client``; returns what it queued."""
    from segment.analytics import Client

    errors: list[Any] = []
    client = Client(
        write_key,
        host=url,
        sync_mode=sync_mode,
        gzip=use_gzip,
        upload_size=4,  # several batches in async mode
        upload_interval=0.05,
        max_retries=1,
        on_error=lambda exc, batch: errors.append((exc, batch)),
    )
    sent: dict[str, dict[str, Any]] = {}

    def record(result: tuple[bool, dict[str, Any]]) -> None:
        ok, message = result
        assert ok
        sent[message["messageId"]] = message

    for i in range(3):
        user, anon = f"py-{tag}-{i}", f"anon-{tag}-{i}"
        record(client.track(user, "Order Completed", {"total": 10.5 + i, "n": i}))
        record(client.identify(user, {"plan": "pro", "email": f"u{i}@example.com"}))
        record(client.page(anonymous_id=anon, category="Docs", name="Home"))
        record(client.screen(user, name="Basket", properties={"items": i}))
        record(client.group(user, f"org-{i}", {"name": "Acme"}))
        record(client.alias(anon, user))
    record(client.track(1234, "Numeric Id", {"mode": tag}))  # numeric ids become strings
    if not sync_mode:
        client.flush()
        client.join()
    assert errors == [], f"{tag}: {errors}"
    assert len(sent) == 19
    return sent


def test_python_sdk_every_call_stored_once(server: Server, write_key: str) -> None:
    """segment-analytics-python, sync and async, gzip off and on (one server for all four)."""
    sent: dict[str, dict[str, Any]] = {}
    before = utcnow()
    for sync_mode, use_gzip in PYTHON_MODES:
        tag = f"{'sync' if sync_mode else 'async'}-{'gzip' if use_gzip else 'plain'}"
        sent.update(send_with_python_sdk(server.url, write_key, sync_mode, use_gzip, tag))
    after = utcnow()

    rows = by_message_id(stored_events(server))
    assert set(rows) == set(sent)
    assert len(sent) == 19 * len(PYTHON_MODES)
    for message_id, message in sent.items():
        row = rows[message_id]
        assert row["type"] == message["type"]
        assert row["user_id"] == message.get("userId")
        assert row["anonymous_id"] == message.get("anonymousId")
        assert row["library_name"] == "analytics-python"
        assert row["retry_count"] == 0
        assert row["ip"] is None  # /v1/batch is a server route: our address is not the user's
        assert before - timedelta(seconds=1) <= row["received_at"] <= after + timedelta(seconds=1)
        # sentAt is Python's isoformat(): +00:00 offset and microseconds.
        assert row["sent_at"] is not None
        assert_skew_corrected(row)
        if row["type"] == "page":
            assert row["user_id"] is None and row["anonymous_id"].startswith("anon-")
            assert (row["name"], row["category"]) == ("Home", "Docs")
        elif row["type"] == "alias":
            assert row["previous_id"].startswith("anon-") and row["user_id"].startswith("py-")
        elif row["type"] == "group":
            assert row["group_id"].startswith("org-")
            assert json.loads(row["traits"]) == {"name": "Acme"}
        elif row["event"] == "Order Completed":
            assert json.loads(row["properties"])["total"] >= 10.5
    numeric = [r for r in rows.values() if r["event"] == "Numeric Id"]
    assert [r["user_id"] for r in numeric] == ["1234"] * len(PYTHON_MODES)
    modes = {json.loads(r["properties"])["mode"] for r in numeric}
    assert modes == {"async-plain", "async-gzip", "sync-plain", "sync-gzip"}


# -- 2. @segment/analytics-node ----------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("node") is None
    or not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir(),
    reason="node or @segment/analytics-node is not installed (bin/dev test installs it)",
)
def test_node_sdk_every_call_stored_once(server: Server, write_key: str) -> None:
    count = 30
    result = subprocess.run(
        ["node", str(NODE_DIR / "send.mjs"), server.url, write_key, str(count)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == []
    assert report["statuses"] and set(report["statuses"]) == {200}
    assert len(report["statuses"]) >= count // 7  # flushAt 7: several uploads
    message_ids = report["messageIds"]
    assert len(message_ids) == len(set(message_ids)) == count

    rows = by_message_id(stored_events(server))
    assert set(rows) == set(message_ids)
    types = {row["type"] for row in rows.values()}
    assert types == {"track", "identify", "page", "screen", "group", "alias"}
    for row in rows.values():
        assert row["message_id"].startswith("node-next-")
        assert row["library_name"] == "@segment/analytics-node"
        assert json.loads(row["metadata"])["jsRuntime"] == "node"
        assert_skew_corrected(row)


# -- 3. analytics-kotlin wire style ------------------------------------------------------


def kotlin_event(kind: str, device_time: datetime, **fields: Any) -> dict[str, Any]:
    """An event as analytics-kotlin serialises it (encodeDefaults: userId "" when anonymous)."""
    return {
        "type": kind,
        "messageId": str(uuid.uuid4()),
        "anonymousId": "5b5d3f0e-6c6c-4a52-9b7a-1c9e0cc0b8b1",
        "userId": "",
        "integrations": {},
        "context": {
            "app": {
                "name": "Shop",
                "version": "4.2.0",
                "namespace": "com.example.shop",
                "build": "420",
            },
            "device": {
                "id": "",
                "manufacturer": "Google",
                "model": "Pixel 7",
                "name": "panther",
                "type": "android",
            },
            "library": {"name": "analytics-kotlin", "version": "1.16.0"},
            "os": {"name": "Android", "version": "14"},
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "network": {"wifi": True, "cellular": False, "bluetooth": False},
            "screen": {"density": 2.625, "height": 2400, "width": 1080},
            "traits": {"anonymousId": "5b5d3f0e-6c6c-4a52-9b7a-1c9e0cc0b8b1"},
            "userAgent": "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 7 Build/UQ1A)",
            "instanceId": str(uuid.uuid4()),
        },
        "timestamp": iso_z(device_time),
        "_metadata": {"bundled": [], "unbundled": [], "bundledIds": []},
        **fields,
    }


def kotlin_file(events: list[dict[str, Any]], sent_at: datetime, write_key: str) -> str:
    """The text of a Kotlin batch file: events appended, then the closing text with sentAt."""
    body = '{"batch":[' + ",".join(json.dumps(e, separators=(",", ":")) for e in events)
    return body + f'],"sentAt":"{iso_z(sent_at)}","writeKey":"{write_key}"}}'


def test_kotlin_style_gzip_chunked_text_plain(server: Server, write_key: str) -> None:
    # The events were queued two minutes before upload, on a device 10 minutes slow.
    device_skew = timedelta(minutes=-10)
    real_event_time = utcnow() - timedelta(minutes=2)
    events = [
        kotlin_event("track", real_event_time + device_skew, event="Product Viewed",
                     properties={"sku": "A-1"}),
        kotlin_event("screen", real_event_time + device_skew + timedelta(seconds=3),
                     name="Product", properties={}),
        kotlin_event("identify", real_event_time + device_skew + timedelta(seconds=4),
                     userId="kt-user-1", traits={"plan": "free"}),
    ]  # fmt: skip
    sent_clock = utcnow()  # the real time at which the SDK stamps sentAt
    text = kotlin_file(events, sent_clock + device_skew, write_key)
    sent_bytes: list[int] = []

    def body() -> Iterator[bytes]:
        for chunk in gzip_chunks(text):
            sent_bytes.append(len(chunk))
            yield chunk

    request = httpx.Request(
        "POST",
        server.url + "/v1/b",
        content=body(),
        headers={
            "Content-Type": "text/plain",
            "Content-Encoding": "gzip",
            "User-Agent": "analytics-kotlin/1.16.0",
        },
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert "authorization" not in request.headers
    with httpx.Client(timeout=20, follow_redirects=False) as client:
        response = client.send(request)
    after = utcnow()
    assert_ok(response)
    assert len(sent_bytes) > 2  # really streamed in several chunks

    rows = by_message_id(stored_events(server))
    assert set(rows) == {e["messageId"] for e in events}
    seconds = {"track": 0, "screen": 3, "identify": 4}  # after the first event
    for sent in events:
        row = rows[sent["messageId"]]
        assert row["type"] == sent["type"]
        assert row["anonymous_id"] == sent["anonymousId"]
        assert row["device_id"] is None  # Kotlin sends device.id "" while it reads the id
        assert (row["os_name"], row["app_version"], row["library_name"]) == (
            "Android", "4.2.0", "analytics-kotlin"
        )  # fmt: skip
        assert row["ip"] == "127.0.0.1"  # /v1/b is a client route
        assert_skew_corrected(row)
        # The corrected time is the real event time (plus the upload's latency at most),
        # not the slow device clock.
        real = real_event_time + timedelta(seconds=seconds[row["type"]])
        slack = timedelta(milliseconds=2)  # the SDK sends milliseconds
        assert real - slack <= row["timestamp"] <= real + (after - sent_clock) + slack
        assert row["original_timestamp"] == parse_z(sent["timestamp"])
        assert row["sent_at"] == parse_z(iso_z(sent_clock + device_skew))
    by_type = {row["type"]: row for row in rows.values()}
    assert by_type["track"]["user_id"] is None  # "userId": "" means anonymous
    assert by_type["screen"]["user_id"] is None
    assert by_type["identify"]["user_id"] == "kt-user-1"
    assert by_type["track"]["event"] == "Product Viewed"


# -- 4. analytics-swift wire style -------------------------------------------------------


def test_swift_style_multiline_json_without_auth(server: Server, write_key: str) -> None:
    now = utcnow()
    events = [
        {
            "type": kind,
            "messageId": str(uuid.uuid4()).upper(),  # Swift: UUID().uuidString
            "anonymousId": "E621E1F8-C36C-495A-93FC-0C247A3E6E5F",  # no userId key at all
            "timestamp": iso_z(now - timedelta(seconds=5 - i)),
            "context": {
                "app": {
                    "name": "Shop",
                    "version": "7.1",
                    "build": "71",
                    "namespace": "com.example.shop",
                },
                "device": {
                    "id": "3B1C6A0E-1F4C-4E3B-9E63-9E2B6B6C5A0D",
                    "manufacturer": "Apple",
                    "model": "iPhone15,2",
                    "type": "ios",
                    "name": "iPhone",
                },
                "os": {"name": "iOS", "version": "17.5.1"},
                "library": {"name": "analytics-swift", "version": "1.5.11"},
                "locale": "en-GB",
                "timezone": "Europe/London",
                "network": {"wifi": True, "cellular": False},
                "screen": {"width": 393, "height": 852},
            },
            "integrations": {},
            "_metadata": {"bundled": [], "unbundled": [], "bundledIds": []},
            **extra,
        }
        for i, (kind, extra) in enumerate(
            [
                ("screen", {"name": "Home", "properties": {}}),
                (
                    "track",
                    {"event": "Application Opened", "properties": {"from_background": False}},
                ),
                ("track", {"event": "Added To Cart", "properties": {"price": 4.99}}),
            ]
        )
    ]
    # The batch file as Swift writes it: one event per line, closing text appended.
    body = (
        '{ "batch": [\n'
        + ",\n".join(json.dumps(e) for e in events)
        + f'\n],"sentAt":"{iso_z(utcnow())}","writeKey":"{write_key}"}}\n'
    )
    response = httpx.post(
        server.url + "/v1/b",
        content=body.encode(),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Accept-Encoding": "gzip",
            "User-Agent": "analytics-ios/1.5.11",
        },
        follow_redirects=False,
    )
    assert_ok(response)

    rows = by_message_id(stored_events(server))
    assert set(rows) == {e["messageId"] for e in events}  # upper-case ids kept as sent
    for sent in events:
        row = rows[sent["messageId"]]
        assert row["user_id"] is None
        assert row["anonymous_id"] == sent["anonymousId"]
        assert row["device_id"] == "3B1C6A0E-1F4C-4E3B-9E63-9E2B6B6C5A0D"
        assert (row["os_name"], row["device_model"]) == ("iOS", "iPhone15,2")
        assert_skew_corrected(row)
    names = sorted(row["event"] for row in rows.values())
    assert names == ["Added To Cart", "Application Opened", "Home"]


# -- 5. analytics.js -----------------------------------------------------------------------

ORIGIN = "https://shop.example.com"
BROWSER_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)


def ajs_event(kind: str, write_key: str, moment: datetime, **fields: Any) -> dict[str, Any]:
    """An analytics.js (next) event as standard mode sends it to /v1/{t,i,p,...}."""
    return {
        "timestamp": iso_z(moment),
        "integrations": {},
        "type": kind,
        "context": {
            "page": {
                "path": "/cart",
                "referrer": "",
                "search": "?x=1",
                "title": "Cart",
                "url": f"{ORIGIN}/cart?x=1",
            },
            "userAgent": BROWSER_UA,
            "locale": "en-US",
            "library": {"name": "analytics.js", "version": "next-1.84.3"},
            "timezone": "America/New_York",
        },
        "messageId": f"ajs-next-{int(moment.timestamp() * 1000)}-{uuid.uuid4()}",
        "anonymousId": str(uuid.uuid4()),
        "userId": None,
        "writeKey": write_key,  # on every event, as well as the batch
        **fields,
    }


def test_analytics_js_standard_mode_preflight_then_post(server: Server, write_key: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as client:
        preflight = client.options(
            "/v1/t",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,x-retry-count",
            },
        )
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] in (ORIGIN, "*")
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-retry-count" in allowed

        sent: list[dict[str, Any]] = []
        device_now = utcnow() - timedelta(seconds=90)  # the laptop's clock is 90 s slow
        calls = [
            ("/v1/p", "page", {"name": "Cart", "properties": {"path": "/cart"}}),
            ("/v1/t", "track", {"event": "Checkout Started", "properties": {"value": 42}}),
            ("/v1/i", "identify", {"userId": "web-user-1", "traits": {"email": "a@b.c"}}),
        ]
        for path, kind, fields in calls:
            event = ajs_event(kind, write_key, device_now - timedelta(milliseconds=300), **fields)
            event["sentAt"] = iso_z(device_now)
            event["_metadata"] = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
            response = client.post(
                path,
                content=json.dumps(event),
                headers={
                    "Content-Type": "text/plain",
                    "Authorization": basic(write_key),
                    "Origin": ORIGIN,
                    "User-Agent": BROWSER_UA,
                },
            )
            assert_ok(response)
            assert response.headers["access-control-allow-origin"] in (ORIGIN, "*")
            sent.append(event)

        # Batching mode: /v1/b, events keep writeKey but lose their sentAt; one at the top.
        batched = [
            ajs_event("track", write_key, device_now - timedelta(seconds=2), event="Batched",
                      properties={"n": n},
                      _metadata={"bundled": ["Segment.io"], "unbundled": []})
            for n in range(3)
        ]  # fmt: skip
        batch_sent_at = iso_z(device_now)
        response = client.post(
            "/v1/b",
            content=json.dumps({"batch": batched, "sentAt": batch_sent_at, "writeKey": write_key}),
            headers={"Content-Type": "text/plain", "Authorization": basic(write_key),
                     "Origin": ORIGIN},
        )  # fmt: skip
        assert_ok(response)
        assert response.headers["access-control-allow-origin"] in (ORIGIN, "*")

        # A 400 must be readable by the page (CORS headers on errors too), or the browser
        # reports a network error and analytics.js retries the bad event forever.
        response = client.post(
            "/v1/t",
            content=b'{"type": "track", "event": ',
            headers={"Content-Type": "text/plain", "Authorization": basic(write_key),
                     "Origin": ORIGIN},
        )  # fmt: skip
        assert response.status_code == 400
        assert response.headers["access-control-allow-origin"] in (ORIGIN, "*")
        assert response.json()["code"] == "invalid_json"

    rows = by_message_id(stored_events(server))
    assert set(rows) == {e["messageId"] for e in sent + batched}
    for event in sent + batched:
        row = rows[event["messageId"]]
        assert row["type"] == event["type"]
        assert row["library_name"] == "analytics.js"
        assert row["user_agent"] == BROWSER_UA
        assert row["ip"] == "127.0.0.1"
        metadata = json.loads(row["metadata"])
        assert metadata["bundled"] == ["Segment.io"]
        for column in ("properties", "traits", "context", "metadata"):
            assert "writeKey" not in (row[column] or ""), column  # never stored
            assert write_key not in (row[column] or ""), column
        assert row["sent_at"] == parse_z(event.get("sentAt", batch_sent_at))
        assert_skew_corrected(row)
        # 300 ms (standard) or 2 s (batched) before arrival, whatever the laptop's clock says.
        lag = timedelta(milliseconds=300) if "sentAt" in event else timedelta(seconds=2)
        assert row["received_at"] - row["timestamp"] == lag
    assert rows[sent[2]["messageId"]]["user_id"] == "web-user-1"
    assert rows[sent[1]["messageId"]]["event"] == "Checkout Started"
    for event in batched:
        assert rows[event["messageId"]]["sent_at"] == parse_z(batch_sent_at)


# -- 6. the settings endpoint ------------------------------------------------------------


def test_settings_endpoint_points_sdks_at_seamline(server: Server, write_key: str) -> None:
    for prefix in ("/v1/projects", "/projects"):  # analytics.js; Swift and Kotlin
        for suffix in ("/settings", "/settings/"):
            url = f"{server.url}{prefix}/{write_key}{suffix}"
            response = httpx.get(url, follow_redirects=False)
            assert response.status_code == 200, (url, response.text)
            segment_io = response.json()["integrations"]["Segment.io"]
            assert segment_io["apiKey"] == write_key
            api_host = segment_io["apiHost"]
            assert "://" not in api_host and not api_host.startswith("/")
            assert api_host == f"127.0.0.1:{server.port}/v1"
            assert segment_io["protocol"] in ("http", "https")


# -- 7. clock skew, retries and dedupe across a restart ----------------------------------


def test_clock_skew_retry_dedupe_and_restart(server: Server, write_key: str) -> None:
    def batch(device_offset: timedelta, n: int, age: timedelta) -> dict[str, Any]:
        device_now = utcnow() + device_offset
        return {
            "batch": [
                {"type": "track", "event": "Skewed", "userId": "skew-user",
                 "messageId": str(uuid.uuid4()),
                 "timestamp": iso_z(device_now - age - timedelta(seconds=i)),
                 "properties": {"i": i}}
                for i in range(n)
            ],
            "sentAt": iso_z(device_now),
            "writeKey": write_key,
        }  # fmt: skip

    ahead = batch(timedelta(hours=1), 3, timedelta(seconds=5))  # device clock 1 h fast
    behind = batch(timedelta(hours=-1), 2, timedelta(seconds=5))  # device clock 1 h slow
    url = server.url + "/v1/batch"
    auth = {"Authorization": basic(write_key), "Content-Type": "application/json"}
    before = utcnow()
    assert_ok(httpx.post(url, json=ahead, headers=auth))
    assert_ok(httpx.post(url, json=behind, headers=auth))
    # The SDK did not see our answer and re-sends the same batch.
    assert_ok(httpx.post(url, json=ahead, headers={**auth, "X-Retry-Count": "1"}))
    assert_ok(httpx.post(url, json=behind, headers={**auth, "X-Retry-Count": "1"}))
    after = utcnow()

    server.stop()
    server.start()
    # After a restart, the same batches again (a mobile app's persisted queue).
    assert_ok(httpx.post(url, json=ahead, headers={**auth, "X-Retry-Count": "2"}))
    assert_ok(httpx.post(url, json=behind, headers={**auth, "X-Retry-Count": "2"}))
    retried_new = batch(timedelta(0), 1, timedelta(seconds=1))  # first seen on a retry
    assert_ok(httpx.post(url, json=retried_new, headers={**auth, "X-Retry-Count": "3"}))
    stale = batch(timedelta(0), 1, timedelta(minutes=30))  # sentAt 20 min before arrival
    stale["sentAt"] = iso_z(utcnow() - timedelta(minutes=20))
    assert_ok(httpx.post(url, json=stale, headers=auth))

    rows = by_message_id(stored_events(server))
    expected = ahead["batch"] + behind["batch"] + retried_new["batch"] + stale["batch"]
    assert set(rows) == {e["messageId"] for e in expected}
    for sent in ahead["batch"] + behind["batch"]:
        row = rows[sent["messageId"]]
        assert row["retry_count"] == 0  # the first copy is the one kept
        # Flagged when sentAt is over 10 minutes before arrival: true of the slow clock only.
        assert row["skew_flag"] is (sent in behind["batch"])
        assert row["original_timestamp"] == parse_z(sent["timestamp"])
        assert_skew_corrected(row)
        # 5 (+i) seconds before arrival in real time, whatever the device clock said.
        age = timedelta(seconds=5 + sent["properties"]["i"])
        slack = timedelta(milliseconds=5)
        assert before - age - slack <= row["timestamp"] <= after - age + slack
        assert abs(row["original_timestamp"] - row["timestamp"]) > timedelta(minutes=59)
    new_row = rows[retried_new["batch"][0]["messageId"]]
    assert (new_row["retry_count"], new_row["skew_flag"]) == (3, True)
    stale_row = rows[stale["batch"][0]["messageId"]]
    assert stale_row["skew_flag"] is True
    assert_skew_corrected(stale_row)
    # The event happened 10 minutes before sentAt, so 10 minutes before arrival.
    assert abs(stale_row["received_at"] - stale_row["timestamp"] - timedelta(minutes=10)) < (
        timedelta(seconds=1)
    )


# -- 8. routes: trailing slashes, single-event routes, /v1/m, no redirects -------------------

BATCH_PATHS = ["/v1/batch", "/v1/b", "/v1/import", "/b", "/batch"]
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
# Long names (HTTP API) and analytics.js's first-letter names (/v1/t, /v1/i, ...).
SINGLE_PATHS = {
    **{f"/v1/{kind}": kind for kind in EVENT_TYPES},
    **{f"/v1/{kind[0]}": kind for kind in EVENT_TYPES},
}


def single_body(kind: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"userId": f"route-user-{n}", "messageId": f"route-{n}-{uuid.uuid4()}"}
    if kind == "track":
        body["event"] = "Route Checked"
    elif kind in ("page", "screen"):
        body["name"] = "Routes"
    elif kind == "group":
        body["groupId"] = "route-group"
    elif kind == "alias":
        body["previousId"] = f"route-anon-{n}"
    return body


def test_every_route_with_and_without_trailing_slash_never_redirects(
    server: Server, write_key: str
) -> None:
    statuses: dict[str, int] = {}
    expected: dict[str, str] = {}  # messageId -> type
    auth = {"Authorization": basic(write_key)}
    n = 0
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as client:
        for path in BATCH_PATHS:
            for variant in (path, path + "/"):
                n += 1
                event = {"type": "identify", **single_body("identify", n)}
                response = client.post(variant, json={"batch": [event]}, headers=auth)
                statuses[f"POST {variant}"] = response.status_code
                assert_ok(response)
                expected[event["messageId"]] = "identify"
        for path, kind in SINGLE_PATHS.items():
            for variant in (path, path + "/"):
                n += 1
                body = single_body(kind, n)
                if len(path) == len("/v1/t"):  # analytics.js style: carries its type
                    body["type"] = kind
                response = client.post(variant, json=body, headers=auth)
                statuses[f"POST {variant}"] = response.status_code
                assert_ok(response)
                expected[body["messageId"]] = kind
        # The path decides the type of a single event, as Segment and RudderStack do.
        n += 1
        mismatched = {**single_body("screen", n), "type": "track"}
        assert_ok(client.post("/v1/screen", json=mismatched, headers=auth))
        expected[mismatched["messageId"]] = "screen"

        # SDK telemetry: accepted and thrown away, even when it looks like a batch of events.
        metrics = {"series": [{"type": "Counter", "metric": "analytics_js.invoke.track",
                               "value": 1, "tags": {"library": "analytics.js"}}]}  # fmt: skip
        lookalike = {"batch": [{"type": "track", "event": "Telemetry", "userId": "m",
                                "messageId": "metrics-must-not-be-stored"}],
                     "writeKey": write_key}  # fmt: skip
        for variant in ("/v1/m", "/v1/m/"):
            for body in (metrics, lookalike):
                response = client.post(
                    variant, content=json.dumps(body), headers={"Content-Type": "text/plain"}
                )
                statuses[f"POST {variant}"] = response.status_code
                assert response.status_code == 200, response.text

        # Preflights and settings on every variant, and wrong methods: never a redirect.
        every_path = [*BATCH_PATHS, *SINGLE_PATHS, "/v1/m"]
        for path in every_path:
            for variant in (path, path + "/"):
                response = client.options(
                    variant,
                    headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "authorization"},
                )  # fmt: skip
                statuses[f"OPTIONS {variant}"] = response.status_code
                assert response.status_code in (200, 204), (variant, response.status_code)
                statuses[f"GET {variant}"] = client.get(variant).status_code
        for prefix in ("/v1/projects", "/projects"):
            for suffix in ("/settings", "/settings/"):
                statuses[f"GET {prefix}{suffix}"] = client.get(
                    f"{prefix}/{write_key}{suffix}"
                ).status_code
        # Paths that are almost right: answered, not redirected.
        for odd in ("/v1/batch//", "/v1//batch", "/V1/batch", "/v1"):
            statuses[f"POST {odd}"] = client.post(odd, json={"batch": []}).status_code

    redirects = {what: code for what, code in statuses.items() if 300 <= code < 400}
    assert redirects == {}
    assert len(statuses) > 100

    rows = by_message_id(stored_events(server))
    assert {m: r["type"] for m, r in rows.items()} == expected
    assert "metrics-must-not-be-stored" not in rows
    for row in rows.values():
        if row["type"] == "alias":
            assert row["previous_id"].startswith("route-anon-")
        if row["type"] == "group":
            assert row["group_id"] == "route-group"


def test_gzip_body_helper_is_real_gzip() -> None:
    """Guard for the Kotlin test: the streamed pieces form one valid gzip member."""
    text = json.dumps({"batch": [{"k": "v" * 500}]})
    assert gzip.decompress(b"".join(gzip_chunks(text))).decode() == text


def test_an_in_process_client_reaches_the_same_collection_endpoint(tmp_path: Path) -> None:
    """`serve` sends collection POSTs straight to their endpoint (CollectFastPath); the app
    routes to the same endpoint for an in-process client, with the same answers."""
    import asyncio

    from seamline.app import Workspace
    from seamline.web.server import create_app

    async def exchange(app: Any, write_key: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as c:
            auth = {"Authorization": basic(write_key), "Origin": "https://shop.example"}
            good = {"batch": [{"type": "track", "event": "Seen", "userId": "u-1",
                               "messageId": "in-process-1"}]}  # fmt: skip
            return [await c.post("/v1/batch/", json=good, headers=auth),
                    await c.post("/v1/b", content=b"{not json", headers=auth),
                    await c.post("/v1/t", json={"event": "No id"}, headers=auth)]  # fmt: skip

    with Workspace(tmp_path / "workspace") as workspace:
        write_key = workspace.add_source("app", "mobile")["write_key"]
        app = create_app(workspace)
        assert set(app.state.collect_endpoints) >= {"/v1/batch", "/v1/batch/", "/v1/t"}
        stored, bad_json, no_id = asyncio.run(exchange(app, write_key))
        assert stored.status_code == 200 and stored.json() == {"success": True}
        assert stored.headers["access-control-allow-origin"] == "https://shop.example"
        assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_json"
        assert bad_json.headers["access-control-allow-origin"] == "https://shop.example"
        assert no_id.status_code == 200  # a bad event is a failed event, not a failed request
        stats = workspace.stats()
    assert stats["events"] == 1 and stats["failed_events"] == 1
