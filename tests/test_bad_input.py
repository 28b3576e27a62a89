"""Bad input against a real server (reliability-and-security.md §6.5, segment-ingest.md §4-5).

A request the server cannot take as a whole gets ``400`` with a JSON ``{code, message}``
and changes no row; a parseable batch gets ``200``, its good events are stored and its
bad ones land in ``failed_events`` with a reason; an unknown write key gets ``200`` and
is counted as dropped; a secret token on an ingest route gets ``401``. Whatever comes
in, the server never answers 5xx and stays up.

The randomized round is seeded (``SEAMLINE_FUZZ_SEED``, ``SEAMLINE_FUZZ_REQUESTS``) and
checks conservation: events in ``200`` answers = stored + failed + dropped, exactly.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import string
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ARTIFACTS, Server

FUZZ_SEED = int(os.environ.get("SEAMLINE_FUZZ_SEED", "7321"))
FUZZ_REQUESTS = int(os.environ.get("SEAMLINE_FUZZ_REQUESTS", "400"))
MAX_EVENT_BYTES = 32 * 1024 + 1600
MAX_REQUEST_BYTES = 500 * 1024 + 25 * 1024


# -- helpers --------------------------------------------------------------------------
def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def track(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Tested", "userId": "u-1", "messageId": message_id, **extra}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The documented error envelope: JSON ``{"code": str, "message": str}``."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


class Api:
    """The running server's JSON API, with an admin token."""

    def __init__(self, server: Server, token: str):
        self.server = server
        self.token = token
        self.http = httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def totals(self) -> tuple[int, int, int]:
        stats = self.get("/api/stats")
        return stats["events"], stats["failed_events"], stats["dropped_unknown_key"]

    def source(self, name: str) -> dict[str, Any]:
        return next(s for s in self.get("/api/stats")["sources"] if s["name"] == name)

    def add_source(self, name: str, channel: str) -> str:
        response = self.http.post("/api/sources", json={"name": name, "channel": channel})
        assert response.status_code == 201, response.text
        return str(response.json()["write_key"])

    def alive(self) -> None:
        assert self.server.proc is not None and self.server.proc.poll() is None, "server died"
        assert self.http.get("/api/health").json()["ok"] is True


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("bad-input") / "workspace").start()
    yield server
    if server.proc is not None:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def api(srv: Server) -> Iterator[Api]:
    api = Api(srv, srv.admin_token())
    yield api
    api.http.close()


@pytest.fixture(scope="module")
def key(api: Api) -> str:
    return api.add_source("bad-input-app", "mobile")


@pytest.fixture(scope="module")
def client(srv: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        yield http


# -- request-level rejections ---------------------------------------------------------
def _good_batch(count: int, prefix: str) -> bytes:
    return dumps({"batch": [track(f"{prefix}-{n}") for n in range(count)]})


def _oversize_request() -> bytes:
    """About 600 KB of events, each under the per-event limit."""
    event = track("big", properties={"pad": "x" * 20_000})
    return dumps({"batch": [{**event, "messageId": f"big-{n}"} for n in range(30)]})


def _gzip_bomb() -> bytes:
    bomb = gzip.compress(b'{"batch":[' + b" " * (64 << 20) + b"]}", compresslevel=9)
    assert len(bomb) < 200_000  # small on the wire, 64 MB inflated
    return bomb


def _chunks(body: bytes, size: int = 16_384) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


TRUNCATED_GZIP = gzip.compress(_good_batch(5, "tgz"))[:-12]
EVENT = b'{"type":"track","event":"x","userId":"u","messageId":"%s","properties":%s}'


def _raw_batch(properties: bytes) -> bytes:
    return b'{"batch":[' + EVENT % (b"raw", properties) + b"]}"


# (id, body, headers, path, status, code); the key is added unless headers say otherwise.
REJECTIONS: list[tuple[str, Any, dict[str, str], str, int, str]] = [
    ("invalid-json", b'{"batch": [', {}, "/v1/batch", 400, "invalid_json"),
    ("not-json", b"hello, world", {}, "/v1/batch", 400, "invalid_json"),
    ("batch-not-array", b'{"batch": 3}', {}, "/v1/batch", 400, "invalid_batch"),
    ("batch-null", b'{"batch": null}', {}, "/v1/batch", 400, "invalid_batch"),
    ("no-batch-field", b'{"events": []}', {}, "/v1/batch", 400, "invalid_batch"),
    ("top-level-array", dumps([track("arr-1")]), {}, "/v1/batch", 400, "invalid_batch"),
    ("single-not-object", b'["x"]', {}, "/v1/track", 400, "invalid_event"),
    ("oversize-event-in-batch",
     dumps({"batch": [track("ev-big", properties={"pad": "x" * 40_000})]}),
     {}, "/v1/batch", 400, "event_too_large"),
    ("oversize-single-event", dumps(track("ev-big-1", properties={"pad": "x" * 40_000})),
     {}, "/v1/track", 400, "event_too_large"),
    ("oversize-request", _oversize_request(), {}, "/v1/batch", 400, "request_too_large"),
    ("oversize-request-chunked", "chunked", {}, "/v1/batch", 400, "request_too_large"),
    ("gzip-bomb", _gzip_bomb(), {"Content-Encoding": "gzip"}, "/v1/batch", 400,
     "request_too_large"),
    ("too-many-events", _good_batch(2501, "many"), {}, "/v1/batch", 400, "batch_too_large"),
    ("lone-surrogate", _raw_batch(b'{"a":"\\ud800"}'), {}, "/v1/batch", 400, "invalid_json"),
    ("lone-low-surrogate", _raw_batch(b'{"a":"x\\udc00y"}'), {}, "/v1/batch", 400,
     "invalid_json"),
    ("surrogate-in-key", _raw_batch(b'{"\\ud800":1}'), {}, "/v1/batch", 400, "invalid_json"),
    ("nan", _raw_batch(b'{"a":NaN}'), {}, "/v1/batch", 400, "invalid_json"),
    ("infinity", _raw_batch(b'{"a":-Infinity}'), {}, "/v1/batch", 400, "invalid_json"),
    ("invalid-utf8", _raw_batch(b'{"a":"\xff\xfe"}'), {}, "/v1/batch", 400, "invalid_json"),
    ("invalid-utf8-single", EVENT % (b"raw1", b'{"a":"\xc3"}'), {}, "/v1/track", 400,
     "invalid_json"),
    ("nested-10000-deep", _raw_batch(b"[" * 10_000 + b"]" * 10_000), {}, "/v1/batch", 400,
     "too_deep"),
    ("nested-10000-deep-single", EVENT % (b"deep1", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
     {}, "/v1/page", 400, "too_deep"),
    ("invalid-gzip", _good_batch(2, "igz"), {"Content-Encoding": "gzip"}, "/v1/batch", 400,
     "invalid_gzip"),
    ("truncated-gzip", TRUNCATED_GZIP, {"Content-Encoding": "gzip"}, "/v1/batch", 400,
     "invalid_gzip"),
    ("empty-body", b"", {}, "/v1/batch", 400, "empty_body"),
    ("blank-body", b" \r\n\t ", {}, "/v1/batch", 400, "empty_body"),
    ("missing-write-key", _good_batch(2, "nokey"), {"Authorization": ""}, "/v1/batch", 400,
     "missing_write_key"),
    ("basic-auth-not-base64-key", _good_batch(2, "nokey2"), {"Authorization": "Basic ####"},
     "/v1/batch", 400, "missing_write_key"),
    ("basic-auth-not-utf8",
     _good_batch(2, "badauth"),
     {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()},
     "/v1/batch", 400, "invalid_authorization"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "headers", "path", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in REJECTIONS],
)
def test_request_level_rejections(
    client: httpx.Client, api: Api, key: str, body: Any, headers: dict[str, str], path: str,
    status: int, code: str,
) -> None:  # fmt: skip
    before = api.totals()
    sent_headers = {**basic(key), **headers}
    if sent_headers.get("Authorization") == "":
        del sent_headers["Authorization"]
    content = _chunks(_oversize_request()) if body == "chunked" else body
    response = client.post(path, content=content, headers=sent_headers)
    assert_error(response, status, code)
    assert api.totals() == before, "a rejected request changed a row"
    api.alive()


# -- write keys ---------------------------------------------------------------------------
def test_unknown_write_key_is_accepted_dropped_and_counted(
    srv: Server, client: httpx.Client, api: Api
) -> None:
    before = api.get("/api/stats")
    response = client.post(
        "/v1/batch", content=_good_batch(7, "unknown-key"), headers=basic("sl_wk_not-a-real-key")
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    after = srv.cli("stats")  # the CLI, going through the running server
    assert after["dropped_unknown_key"] == before["dropped_unknown_key"] + 7
    assert after["events"] == before["events"]
    assert after["failed_events"] == before["failed_events"]
    # The key may also come in the body, as analytics.js sends it.
    body = dumps({"writeKey": "sl_wk_also-unknown", "batch": [track("unknown-key-body")]})
    assert client.post("/v1/batch", content=body).status_code == 200
    assert api.totals()[2] == before["dropped_unknown_key"] + 8
    api.alive()


def test_secret_token_as_write_key_is_refused(srv: Server, client: httpx.Client, api: Api) -> None:
    secret = api.token  # from `seamline tokens add`
    assert secret.startswith("sl_sk_")
    before = api.totals()
    for headers, body in (
        (basic(secret), _good_batch(3, "secret")),
        ({}, dumps({"writeKey": secret, "batch": [track("secret-body")]})),
        ({"X-Write-Key": secret}, _good_batch(1, "secret-header")),
    ):
        response = client.post("/v1/batch", content=body, headers=headers)
        assert_error(response, 401, "secret_token_on_ingest")
        assert secret not in response.text
    assert api.totals() == before
    api.alive()


def test_absurd_retry_count_header_is_stored_not_retried_forever(
    client: httpx.Client, api: Api, key: str
) -> None:
    """X-Retry-Count is stored as an INTEGER: a huge value once made every commit fail (503)."""
    before = api.source("bad-input-app")["events"]
    for value in ("99999999999999999999999", "-5", "many", "2147483648"):
        body = _good_batch(1, f"retry-{value}")
        response = client.post(
            "/v1/batch", content=body, headers={**basic(key), "X-Retry-Count": value}
        )
        assert response.status_code == 200, (value, response.text)
    assert api.source("bad-input-app")["events"] == before + 4


# -- per-event failures -------------------------------------------------------------------
PER_EVENT_FAILURES: dict[str, tuple[dict[str, Any] | Any, str]] = {
    # messageId -> (event, expected reason)
    "f-no-event": ({"type": "track", "userId": "u-1"}, "missing_event"),
    "f-blank-event": ({"type": "track", "event": "  ", "userId": "u-1"}, "missing_event"),
    "f-no-ids": ({"type": "track", "event": "E"}, "no_user_anon_id"),
    "f-blank-ids": ({"type": "identify", "userId": " ", "anonymousId": ""}, "no_user_anon_id"),
    "f-alias-no-previous": ({"type": "alias", "userId": "u-1"}, "missing_previous_id"),
    "f-group-no-group-id": ({"type": "group", "userId": "u-1"}, "missing_group_id"),
    "f-properties-list": (track("x", properties=[1, 2]), "invalid_field"),
    "f-properties-string": (track("x", properties="plan=pro"), "invalid_field"),
    "f-traits-number": ({"type": "identify", "userId": "u-1", "traits": 3}, "invalid_field"),
    "f-context-string": (track("x", context="ios"), "invalid_field"),
    "f-bad-timestamp": (track("x", timestamp="yesterday at noon"), "invalid_timestamp"),
    "f-timestamp-year-1": (track("x", timestamp="0001-01-01T00:00:00Z"), "invalid_timestamp"),
    "f-timestamp-number": (track("x", timestamp=1_700_000_000), "invalid_timestamp"),
    "f-bad-sent-at": (track("x", sentAt="soon"), "invalid_timestamp"),
    "f-unknown-type": ({"type": "purchase", "userId": "u-1"}, "invalid_type"),
    "f-user-id-object": (track("x", userId={"id": 1}), "invalid_id"),
    "f-user-id-bool": (track("x", userId=True), "invalid_id"),
}


def test_per_event_failures_keep_the_good_events(srv: Server, client: httpx.Client,
                                                 api: Api) -> None:  # fmt: skip
    source_key = api.add_source("per-event-app", "web")
    good = [track(f"ok-{n}", anonymousId=f"anon-{n}") for n in range(5)]
    good += [
        {"type": "identify", "userId": "u-9", "traits": {"plan": "pro"}, "messageId": "ok-id"},
        {"type": "alias", "userId": "u-9", "previousId": "anon-9", "messageId": "ok-alias"},
        {"type": "group", "userId": "u-9", "groupId": "g-1", "messageId": "ok-group"},
        {"type": "page", "anonymousId": "a-9", "name": "Home", "messageId": "ok-page"},
        {"type": "screen", "userId": 42, "name": "Cart", "messageId": "ok-screen"},
        track("ok-unicode", properties={"s": "emoji \U0001f600 rtl \u05d0 nul \u0000 zwj \u200d"}),
    ]
    bad = [{**event, "messageId": mid} for mid, (event, _) in PER_EVENT_FAILURES.items()]
    # Not an object at all: a failed event without a messageId.
    shapeless: list[Any] = [3, "a string", None, [1, 2]]
    events = [*bad[:8], *good, *shapeless, *bad[8:]]
    response = client.post("/v1/batch", content=dumps({"batch": events}),
                           headers=basic(source_key))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    # A single-event route with a bad event is a 200 too.
    single = client.post("/v1/track", content=dumps({"userId": "u-1", "messageId": "f-single"}),
                         headers=basic(source_key))  # fmt: skip
    assert single.status_code == 200, single.text

    mine = api.source("per-event-app")
    assert mine["events"] == len(good)
    assert mine["failed_events"] == len(bad) + len(shapeless) + 1
    failed = [f for f in srv.cli("failed", "--limit", "500") if f["source"] == "per-event-app"]
    reasons = {f["message_id"]: f["reason"] for f in failed if f["message_id"]}
    expected = {mid: reason for mid, (_, reason) in PER_EVENT_FAILURES.items()}
    assert reasons == {**expected, "f-single": "missing_event"}
    assert Counter(f["reason"] for f in failed if not f["message_id"]) == {
        "invalid_event": len(shapeless)
    }
    for f in failed:
        assert f["message"] and f["raw"], f
    api.alive()


# -- randomized round -------------------------------------------------------------------
TYPES = ("track", "identify", "page", "screen", "group", "alias")
ROUTES = {"track": "/v1/t", "identify": "/v1/identify", "page": "/v1/p", "screen": "/v1/screen",
          "group": "/v1/g", "alias": "/v1/alias"}  # fmt: skip
STRINGS = ["", " ", "plain", "emoji \U0001f680\U0001f469\u200d\U0001f469\u200d\U0001f467",
           "rtl \u05e9\u05dc\u05d5\u05dd", "nul \u0000 inside", "line\u2028sep", "quote \" \\ /",
           "x" * 300, "\u00e9\u00e8", "\ufeffbom"]  # fmt: skip
NUMBERS = [0, -1, 1.5, 2**53, 2**70, -(2**63), 1e300, 5e-324]


class Fuzzer:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.count = 0

    def message_id(self) -> str:
        self.count += 1
        return f"fz-{self.count}-{self.rng.getrandbits(48):012x}"

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        pick = rng.random()
        if depth < 3 and pick < 0.15:
            return {self.key(): self.value(depth + 1) for _ in range(rng.randint(0, 4))}
        if depth < 3 and pick < 0.25:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        if pick < 0.6:
            return rng.choice(STRINGS)
        if pick < 0.85:
            return rng.choice(NUMBERS)
        return rng.choice([True, False, None])

    def key(self) -> str:
        rng = self.rng
        if rng.random() < 0.2:  # the traits the server reads itself
            return rng.choice(["email", "phone", "name", "userId", "id"])
        return rng.choice(["plan", "price", "a.b", "$set", "", "k\u00e9y", "sku"]) + str(
            rng.randint(0, 9)
        )

    def good_event(self) -> dict[str, Any]:
        rng = self.rng
        kind = rng.choice(TYPES)
        event: dict[str, Any] = {"type": kind, "messageId": self.message_id()}
        if kind == "alias" or rng.random() < 0.6:
            event["userId"] = rng.choice(["u-1", "u-2", 12345, "user \u00e9"])
        if "userId" not in event or rng.random() < 0.5:
            event["anonymousId"] = f"anon-{rng.randint(0, 50)}"
        if kind == "track":
            event["event"] = rng.choice(["Order Completed", "Signed Up", "\U0001f6d2 Added"])
        elif kind in ("page", "screen") and rng.random() < 0.8:
            event["name"] = rng.choice(["Home", "Cart", 3])
        elif kind == "group":
            event["groupId"] = rng.choice(["g-1", 7])
        elif kind == "alias":
            event["previousId"] = f"anon-{rng.randint(0, 50)}"
        if rng.random() < 0.7:
            event["properties" if kind != "identify" else "traits"] = {
                self.key(): self.value() for _ in range(rng.randint(0, 6))
            }
        if rng.random() < 0.5:
            event["timestamp"] = rng.choice(
                ["2026-11-23T10:00:00.000Z", "2026-11-23T10:00:00+02:00", "2026-11-23 10:00:00",
                 "2020-02-29T23:59:59.999999Z"]
            )  # fmt: skip
        if rng.random() < 0.3:
            event["sentAt"] = "2026-11-23T10:00:01.000Z"
        if rng.random() < 0.5:
            event["context"] = {
                "library": {"name": "fuzz", "version": self.value(2)},
                "os": {"name": rng.choice(["iOS", "Android", 5])},
                "device": rng.choice([{"id": "d-1", "model": "x"}, "not-an-object", None]),
                "ip": rng.choice(["10.0.0.1", "::1", None, 12]),
                "ignoreSentAt": rng.random() < 0.1,
                "traits": rng.choice(
                    [{"email": self.value(1), "phone": self.value(1)}, "not-an-object", None]
                ),
            }
        return event

    def bad_event(self) -> Any:
        rng = self.rng
        event = self.good_event()
        mutation = rng.randrange(12)
        if mutation == 0:
            event.pop("userId", None)
            event.pop("anonymousId", None)
        elif mutation == 1:
            event["userId"], event["anonymousId"] = " ", ""
        elif mutation == 2:
            event["type"] = "track"
            event.pop("event", None)
        elif mutation == 3:
            event.update(type="alias", userId="u-1")
            event.pop("previousId", None)
        elif mutation == 4:
            event["type"] = "group"
            event.pop("groupId", None)
        elif mutation == 5:
            event["properties"] = rng.choice([[1], "str", 3, True])
        elif mutation == 6:
            event["timestamp"] = rng.choice(
                ["not a date", "0001-01-01T00:00:00Z", 12, "9999-01-01"]
            )
        elif mutation == 7:
            event["type"] = rng.choice(["purchase", "", None, 3, "TRACK"])
        elif mutation == 8:
            return rng.choice([3, "event", None, [], [event], True])
        elif mutation == 9:
            event["messageId"] = "m" * 300
        elif mutation == 10:
            event["userId"] = rng.choice([{"id": 1}, [1], True])
            event.pop("anonymousId", None)
        else:
            event["context"] = rng.choice(["ios", [1], 5])
        return event

    def batch(self, bad_share: float) -> list[Any]:
        return [
            self.bad_event() if self.rng.random() < bad_share else self.good_event()
            for _ in range(self.rng.randint(0, 30))
        ]


def _flip(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def _events_in(body: bytes) -> int | None:
    """How many events a batch body holds, read independently of the server's parser."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        return len(value["batch"])
    return None


@dataclass
class FuzzRequest:
    kind: str
    path: str
    headers: dict[str, str]
    body: bytes
    events: int | None  # events in the body, None if it is not a batch we can read
    expect: set[int]


def fuzz_requests(fuzz: Fuzzer, count: int, key: str) -> list[FuzzRequest]:
    rng = fuzz.rng
    requests = []
    for number in range(count):
        headers = basic(key)
        path = "/v1/batch"
        kind = rng.choices(
            ["good", "mixed", "single", "unknown_key", "gzip", "garbage", "truncated", "flipped",
             "shape", "nasty"],
            weights=[3, 4, 2, 1, 1, 1, 1, 3, 1, 1],
        )[0]  # fmt: skip
        expect: set[int] = {400}
        events: int | None = 0
        if kind in ("good", "mixed", "unknown_key", "gzip", "truncated", "flipped", "nasty"):
            batch = fuzz.batch(0.0 if kind in ("good", "unknown_key") else 0.4)
            envelope: dict[str, Any] = {"batch": batch}
            if rng.random() < 0.3:
                envelope["sentAt"] = rng.choice(["2026-11-23T10:00:05Z", "garbage", 5, None])
            if rng.random() < 0.2:
                envelope["context"] = {"library": {"name": "batch-level"}}
            body = dumps(envelope)
            events = len(batch)
            expect = {200}
            if kind == "unknown_key":
                headers = basic("sl_wk_unknown-" + str(number))
            elif kind == "gzip":
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
            elif kind == "truncated":
                body = body[: rng.randrange(len(body))]
                expect = {400}
            elif kind == "flipped":
                body = _flip(rng, body)
                expect = {200, 400}
                events = _events_in(body)
            elif kind == "nasty":
                token = rng.choice([b"NaN", b"Infinity", b'"\\ud800"', b'"\\udfff x"', b"\xff"])
                body = body.replace(b"[", b"[" + token + b",", 1)
                expect = {400}
            if rng.random() < 0.2:
                headers["Content-Type"] = "text/plain"  # beacons; parsed as JSON regardless
        elif kind == "single":
            event = fuzz.good_event() if rng.random() < 0.6 else fuzz.bad_event()
            if not isinstance(event, dict):
                event = {"messageId": fuzz.message_id()}
            path = ROUTES[rng.choice(TYPES)]
            body, events, expect = dumps(event), 1, {200}
        elif kind == "garbage":
            body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
            if rng.random() < 0.5:
                body = "".join(rng.choices(string.printable, k=rng.randint(0, 500))).encode()
        else:  # valid JSON, wrong shape
            body = rng.choice([b"3", b'"x"', b"[]", b"null", b"{}", b'{"batch":{}}',
                               b'{"batch":"x"}', b'{"batch":[],"sentAt":', b"true"])  # fmt: skip
        requests.append(FuzzRequest(kind, path, headers, body, events, expect))
    return requests


def test_randomized_round_conserves_every_event(srv: Server, client: httpx.Client,
                                                api: Api) -> None:  # fmt: skip
    fuzz_key = api.add_source("fuzz-app", "mobile")
    requests = fuzz_requests(Fuzzer(FUZZ_SEED), FUZZ_REQUESTS, fuzz_key)
    before = api.totals()

    def send(request: FuzzRequest) -> tuple[FuzzRequest, httpx.Response]:
        return request, client.post(request.path, content=request.body, headers=request.headers)

    statuses: Counter[int] = Counter()
    codes: Counter[str] = Counter()
    sent = accepted = rejected = 0
    # Four at a time, so good and bad requests share group commits.
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(requests), 50):
            for request, response in pool.map(send, requests[start : start + 50]):
                where = (request.kind, request.body[:300], response.text[:300])
                statuses[response.status_code] += 1
                assert response.status_code < 500, where
                assert response.status_code in request.expect, where
                if response.status_code == 200:
                    assert response.json() == {"success": True}
                    assert request.events is not None, f"200 for a body that is not JSON: {where}"
                    accepted += request.events
                else:
                    codes[assert_error(response, response.status_code)["code"]] += 1
                    rejected += request.events or 0
                sent += request.events or 0
            api.alive()  # probe between rounds of 50
    events_now, failed_now, dropped_now = api.totals()
    stored = events_now - before[0]
    failed = failed_now - before[1]
    dropped = dropped_now - before[2]
    figures = {
        "seed": FUZZ_SEED,
        "requests": FUZZ_REQUESTS,
        "kinds": dict(Counter(r.kind for r in requests)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "error_codes": dict(codes),
        "events_sent": sent,
        "events_in_200_answers": accepted,
        "stored": stored,
        "failed": failed,
        "dropped_unknown_key": dropped,
        "rejected": rejected,
        "failure_reasons": sorted(
            {
                f["reason"]
                for f in api.get("/api/failed-events", limit=1000)
                if f["source"] == "fuzz-app"
            }
        ),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "bad_input.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("bad input:", json.dumps(figures))
    assert statuses[200] > 0 and statuses[400] > 0
    assert accepted == stored + failed + dropped, figures
    assert sent == stored + failed + dropped + rejected, figures


def test_server_log_has_no_unexpected_errors(srv: Server) -> None:
    """Runs last in this module: nothing above may have produced a 500 or a traceback."""
    log = srv.log()
    assert "unexpected error" not in log and "Exception in ASGI application" not in log, log[-4000:]


def test_workspace_file_is_intact(srv: Server) -> None:
    path: Path = srv.data / "seamline.duckdb"
    assert path.exists() and path.stat().st_size > 0
