"""Identity through the real pipeline: stitching on ingest, person, explain, rebuild, forget."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seamline
from tests.conftest import Server, run_cli

_counter = iter(range(10**9))


def ev(kind: str, minute: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind, "messageId": f"m{next(_counter)}",
                             "timestamp": f"2026-11-01T{9 + minute // 60:02d}:"
                                          f"{minute % 60:02d}:00Z"}
    if kind == "track":
        event["event"] = fields.pop("event", "Something")
    event.update(fields)
    return event  # fmt: skip


def journey() -> dict[str, list[dict[str, Any]]]:
    """Ana: Android app anonymous -> login -> web -> calls (phone only) -> email."""
    return {
        "android": [
            ev("screen", 0, name="Home", anonymousId="and-1", context={"device": {"id": "px-1"}}),
            ev("track", 1, event="Card Activation Failed", anonymousId="and-1"),
            ev("identify", 2, userId="u-ana", anonymousId="and-1",
               traits={"email": "Ana@Bank.example", "phone": "+44 7700 900123"}),
        ],
        "web": [
            ev("page", 30, name="Help", anonymousId="web-9"),
            ev("track", 31, event="Login Succeeded", anonymousId="web-9", userId="u-ana"),
        ],
        "calls": [
            ev("track", 40, event="Call Started", anonymousId="call-1",
               context={"traits": {"phone": "07700 900123"}}),
        ],
        "mail": [
            ev("track", 50, event="Email Opened", anonymousId="esp-1",
               context={"traits": {"email": "ana@bank.example"}}),
        ],
    }  # fmt: skip


def load(ws: seamline.Workspace, streams: dict[str, list[dict[str, Any]]]) -> None:
    channels = {"android": "mobile", "web": "web", "calls": "call_center", "mail": "email"}
    existing = {s["name"] for s in ws.sources()}
    for name, events in streams.items():
        if name not in existing:
            ws.add_source(name, channels.get(name, "server"))
        ws.import_events(name, events)


def test_one_person_across_devices_channels_and_contact_keys(data_dir: Path) -> None:
    with seamline.Workspace(data_dir, seamline.settings.Settings(phone_region="GB")) as ws:
        load(ws, journey())
        ana = ws.person("u-ana")
        assert ws.person("and-1")["person_id"] == ana["person_id"]
        assert ws.person("ANA@bank.example ")["person_id"] == ana["person_id"]
        assert ws.person("+447700900123")["person_id"] == ana["person_id"]
        # a person id (as seams' people_examples list them) is an identifier too
        by_id = ws.person(ana["person_id"])
        assert by_id["matched"] == {"kind": "person_id", "value": ana["person_id"]}
        assert by_id["event_count"] == ana["event_count"]
        kinds = {(i["kind"], i["value"]) for i in ana["identities"]}
        assert {("user_id", "u-ana"), ("email", "ana@bank.example"), ("phone", "+447700900123"),
                ("anonymous_id", "web-9"), ("device_id", "px-1")} <= kinds  # fmt: skip
        assert ana["event_count"] == 7 and ana["merged"]  # the web visitor was merged in
        channels = {e["channel"] for e in ana["events"]}
        assert channels == {"mobile", "web", "call_center", "email"}
        # the anonymous web page view before the login belongs to Ana at once
        assert ana["events"][3]["event"] == "Help"
        assert ws.stats()["persons"] == 1
        same = ws.explain("web-9", "07700 900123")
        assert same["same_person"] and same["merges"]
        assert ws.rebuild_identity()["agrees"]


KIOSK = {"device": {"id": "kiosk"}}


def test_guardrails_shared_device_placeholders_and_explain(data_dir: Path) -> None:
    with seamline.open(data_dir) as ws:
        load(ws, {"android": [
            ev("identify", 0, userId="alice", anonymousId="ipad", context=KIOSK),
            ev("identify", 5, userId="bob", anonymousId="ipad", context=KIOSK),
            ev("track", 6, event="Browse", anonymousId="ipad"),
            ev("track", 7, event="A", userId="carol", anonymousId="undefined"),
            ev("track", 8, event="B", userId="dave", anonymousId="undefined"),
            ev("identify", 9, userId="erin", traits={"email": "family@x.example"}),
            ev("identify", 10, userId="frank", traits={"email": "family@x.example"}),
        ]})  # fmt: skip
        assert ws.person("alice")["person_id"] != ws.person("bob")["person_id"]
        assert ws.person("carol")["person_id"] != ws.person("dave")["person_id"]
        assert ws.person("erin")["person_id"] != ws.person("frank")["person_id"]
        refused = ws.person("bob")["refused"]
        assert {r["reason"] for r in refused} == {"different_user_id"}
        verdict = ws.explain("alice", "bob")
        assert not verdict["same_person"] and "refused" in verdict["verdict"]
        shared = ws.explain("ipad", "alice")
        assert "links nobody" in shared["identifiers"][0]["shared"]
        assert "placeholder" in ws.explain("undefined", "carol")["identifiers"][0]["note"]
        report = ws.rebuild_identity()
        assert report["hubs"] >= 2 and report["components_with_several_user_ids"] == 0


def test_forget_deletes_everywhere_and_suppresses_resends(data_dir: Path) -> None:
    streams = journey()
    with seamline.Workspace(data_dir, seamline.settings.Settings(phone_region="GB")) as ws:
        load(ws, streams)
        ws.import_events("android", [ev("identify", 70, userId="u-other", anonymousId="o-1")])
        before = ws.stats()
        result = ws.forget("ana@bank.example")
        assert result["deleted"]["events"] == 7
        after = ws.stats()
        assert after["events"] == before["events"] - 7 and after["persons"] == 1
        count = ws.store.query_one(
            "SELECT count(*) FROM identities WHERE id_value LIKE '%ana%' OR id_value = 'u-ana'"
        )
        assert count == (0,)
        # the same events again, and a new one for her phone: all dropped at the door
        for name, events in streams.items():
            summary = ws.import_events(name, events)
            assert summary["stored"] == 0 and summary["suppressed"] == len(events)
        call = ev("track", 90, event="Call Started", anonymousId="call-2",
                  context={"traits": {"phone": "+447700900123"}})  # fmt: skip
        fresh = ws.import_events("calls", [call])
        assert fresh["suppressed"] == 1
        assert ws.stats()["dropped_suppressed"] == 8
        assert ws.stats()["events"] == after["events"]
    result = run_cli(data_dir, "person", "u-ana", check=False)
    assert result.returncode == 1 and "No person" in result.stderr


def test_identity_through_the_server_and_cli(server: Server, write_key: str) -> None:
    batch = {"batch": [
        {"type": "track", "event": "App Opened", "anonymousId": "dev-7", "messageId": "s1"},
        {"type": "identify", "userId": "u-7", "anonymousId": "dev-7", "messageId": "s2",
         "traits": {"phone": "+1 415 555 2671"}},
    ]}  # fmt: skip
    response = httpx.post(server.url + "/v1/b", json=batch, auth=(write_key, ""))
    assert response.status_code == 200
    call_key = server.add_source("ivr", "call_center")
    call = {"type": "track", "event": "Call Started", "anonymousId": "ivr-1",
            "context": {"traits": {"phone": "(415) 555-2671"}}}  # fmt: skip
    assert httpx.post(server.url + "/v1/track", json=call, auth=(call_key, "")).status_code == 200
    person = server.cli("person", "u-7")
    assert person["event_count"] == 3
    assert server.cli("person", person["person_id"])["event_count"] == 3
    assert {e["channel"] for e in person["events"]} == {"mobile", "call_center"}
    assert server.cli("identity", "explain", "dev-7", "+14155552671")["same_person"]
    assert server.cli("identity", "rebuild")["agrees"]
    assert server.cli("stats")["persons"] == 1
    gone = server.cli("forget", "u-7")
    assert gone["deleted"]["events"] == 3
    assert httpx.post(server.url + "/v1/b", json=batch, auth=(write_key, "")).status_code == 200
    assert server.cli("stats")["events"] == 0


# -- incremental == batch, for any arrival order, when no guardrail fires ---------------
@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    people = draw(st.integers(min_value=1, max_value=6))
    events: list[dict[str, Any]] = []
    for p in range(people):
        ids = {"anonymousId": [f"a{p}-{i}" for i in range(draw(st.integers(1, 3)))]}
        has_user = draw(st.booleans())
        email = f"p{p}@x.example" if draw(st.booleans()) else None
        for _ in range(draw(st.integers(1, 5))):
            event: dict[str, Any] = {"type": "track", "event": "E",
                                     "anonymousId": draw(st.sampled_from(ids["anonymousId"]))}
            if has_user and draw(st.booleans()):
                event["userId"] = f"u{p}"
            if email and draw(st.booleans()):
                event["context"] = {"traits": {"email": email}}
            events.append(event)  # fmt: skip
    order = draw(st.permutations(range(len(events))))
    return [dict(events[i], messageId=f"m{n}", timestamp="2026-11-01T10:00:00Z")
            for n, i in enumerate(order)]  # fmt: skip


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(events=streams(), chunk=st.integers(min_value=1, max_value=7))
def test_incremental_matches_rebuild_in_any_order(
    tmp_path_factory: Any, events: list[dict[str, Any]], chunk: int
) -> None:
    data = tmp_path_factory.mktemp("prop")
    with seamline.open(data) as ws:
        ws.add_source("app", "mobile")
        for start in range(0, len(events), chunk):
            ws.import_events("app", events[start:start + chunk])
        report = ws.rebuild_identity()
        assert report["agrees"], report
        assert report["not_in_incremental"] == 0
        persons = ws.stats()["persons"]
        assert persons == report["components"]
    random.seed(0)
