"""Location-aware moments end to end: planted movements through a real ``seamline serve``,
delivered to a real webhook receiver on 127.0.0.1 (signatures verified with the independent
``standardwebhooks`` package).

The places: a shop (geofence of 100 m with a door beacon), a second shop 1.6 km away, and
a cafe for the dwell rule. Each person walks a planted path; the receiver counts arrivals.
The dry run (``moments test``) is asked about the same journeys and must agree.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, run_cli
from tests.test_moments import (
    ENV,
    SECRET,
    add_rule,
    api,
    hook,
    now,
    send,
    stats_of,
    track,
    wait_until,
)
from tests.webhook_receiver import Receiver

SHOP = (52.3731, 4.8922)
SHOP_7 = (52.3600, 4.8800)  # about 1.6 km from SHOP
CAFE = (52.3900, 4.9100)
FAR = (52.4200, 4.9500)
PLACES = {
    "places": [
        {"name": "shop-12", "lat": SHOP[0], "lon": SHOP[1], "radius": 100},
        {"name": "shop-7", "lat": SHOP_7[0], "lon": SHOP_7[1], "radius": 100},
        {"name": "cafe", "lat": CAFE[0], "lon": CAFE[1], "radius": 60},
    ],
    "beacons": {"door-12": "shop-12"},
}


def at(point: tuple[float, float], when: datetime, user: str, dx: float = 0.0) -> dict[str, Any]:
    """A location update ``dx`` degrees of latitude from ``point`` (1e-4 deg ~ 11 m)."""
    location = {"latitude": point[0] + dx, "longitude": point[1]}
    return track("Location Updated", when, userId=user, context={"location": location})


def beacon(entered: bool, when: datetime, user: str, beacon_id: str) -> dict[str, Any]:
    name = "Beacon Entered" if entered else "Beacon Exited"
    return track(name, when, userId=user, properties={"beacon_id": beacon_id})


@pytest.fixture
def located(data_dir: Path) -> Iterator[Server]:
    env = dict(ENV, SEAMLINE_MOMENTS_GRACE_SECONDS="1")
    srv = Server(data_dir, env=env).start()
    yield srv
    if srv.proc is not None:
        srv.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(SECRET).start()
    yield rec
    rec.stop()


def body(path: str) -> dict[str, Any]:
    template = ('{"user": {{ event.user_id | tojson }}, "place": {{ event.place.name | tojson }},'
                ' "entered": {{ event.places.entered | tojson }}}')  # fmt: skip
    return {"webhook": {"url": path, "secret": SECRET, "body": template}}


def users(receiver: Receiver, prefix: str) -> list[tuple[str, str]]:
    """(user, place) per distinct webhook-id: delivery is at least once, and receivers
    deduplicate on the id (a retry after a slow answer is not a second moment)."""
    return [(r.json()["user"], r.json()["place"]) for r in unique(receiver, prefix)]


def unique(receiver: Receiver, prefix: str, count: int = 0) -> list[Any]:
    """The distinct deliveries (by webhook-id) at ``prefix``, waiting for ``count``."""
    wait_until(lambda: len(receiver.unique(prefix)) >= count, timeout=15)
    return sorted(receiver.unique(prefix).values(), key=lambda r: r.at)


def test_enter_stay_leave_beacon_consent_and_place_cap(
    located: Server, receiver: Receiver, tmp_path: Path
) -> None:
    server = located
    key = server.add_source("app", "mobile")
    places_file = tmp_path / "places.yaml"
    places_file.write_text(json.dumps(PLACES))
    saved = server.cli("moments", "places", "add", str(places_file))
    assert saved["saved"] == ["shop-12", "shop-7", "cafe"]
    assert {p["name"]: p["beacons"] for p in saved["places"]}["shop-12"] == ["door-12"]
    add_rule(server, tmp_path, {
        "name": "arrive",
        "trigger": {"enters": {"place": ["shop-12", "shop-7"]}},
        "place_cap": {"per": "1h", "max": 1},
        "actions": [body(f"{receiver.url}/arrive")],
    })  # fmt: skip
    add_rule(server, tmp_path, {
        "name": "depart",
        "trigger": {"leaves": "shop-12"},
        "actions": [hook(receiver, "/depart")],
    }, cli=True)  # fmt: skip
    add_rule(server, tmp_path, {
        "name": "card-near-shop",  # an ordinary event, only near the place
        "trigger": {"event": "Card Authorized", "near": "shop-12"},
        "actions": [hook(receiver, "/card")],
    })  # fmt: skip
    t0, step = now(), timedelta(milliseconds=100)

    # a: far -> in shop-12 (enters: fires) -> moves inside (stays: nothing) -> leaves
    send(server, key, at(FAR, t0, "a"))
    send(server, key, at(SHOP, t0 + step * 1, "a"))
    arrived = unique(receiver, "/arrive", 1)
    assert [(r.json()["user"], r.json()["place"]) for r in arrived] == [("a", "shop-12")]
    assert arrived[0].verified and arrived[0].json()["entered"] == ["shop-12"]
    send(server, key, at(SHOP, t0 + step * 2, "a", dx=0.0003))  # ~33 m: inside
    for who, (lat, lon) in (("a", SHOP), ("a2", FAR)):
        where = {"location": {"latitude": lat, "longitude": lon}}
        send(server, key, track("Card Authorized", t0 + step * 3, userId=who, context=where))
    assert len(unique(receiver, "/card", 1)) == 1
    send(server, key, at(FAR, t0 + step * 4, "a"))
    departed = unique(receiver, "/depart", 1)
    assert len(departed) == 1 and departed[0].json()["trigger"]["event"] == "Location Updated"
    assert len(unique(receiver, "/arrive")) == 1, "staying inside must not fire again"
    # back in shop-12 within the hour: the place cap holds; then shop-7 is another place
    send(server, key, at(SHOP, t0 + step * 5, "a"))
    assert wait_until(lambda: stats_of(server)["arrive"]["place_capped"] == 1)
    send(server, key, at(SHOP_7, t0 + step * 6, "a"))
    unique(receiver, "/arrive", 2)
    assert users(receiver, "/arrive") == [("a", "shop-12"), ("a", "shop-7")]
    assert len(unique(receiver, "/depart", 2)) == 2  # leaving shop-12 for shop-7

    # b: the door beacon maps to shop-12 (no GPS at all); exiting is leaving
    send(server, key, beacon(True, t0 + step * 7, "b", "door-12"))
    send(server, key, beacon(True, t0 + step * 7, "b", "unknown-beacon"))
    assert ("b", "shop-12") in [(u, p) for u, p in
                                [(r.json()["user"], r.json()["place"])
                                 for r in unique(receiver, "/arrive", 3)]]  # fmt: skip
    send(server, key, beacon(False, t0 + step * 8, "b", "door-12"))
    assert len(unique(receiver, "/depart", 3)) == 3

    # c: opted out by trait; d: by event (and back in by event for e) -> nothing for c, d
    send(server, key, {"type": "identify", "userId": "c", "messageId": "id-c",
                       "traits": {"location_consent": False},
                       "timestamp": t0.isoformat()})  # fmt: skip
    send(server, key, track("Location Consent Revoked", t0, userId="d"))
    send(server, key, track("Location Consent Revoked", t0, userId="e"))
    send(server, key, track("Location Consent Granted", t0 + step * 1, userId="e"))
    for who in ("c", "d", "e"):
        send(server, key, at(SHOP_7, t0 + step * 9, who))
        send(server, key, beacon(True, t0 + step * 9, who, "door-12"))
    unique(receiver, "/arrive", 5)
    time.sleep(1.0)
    seen = users(receiver, "/arrive")
    assert sorted(seen) == [("a", "shop-12"), ("a", "shop-7"), ("b", "shop-12"),
                            ("e", "shop-12"), ("e", "shop-7")]  # fmt: skip
    stats = stats_of(server)
    assert stats["arrive"]["no_consent"] == 4  # c and d, GPS and beacon each
    assert stats["arrive"]["place_capped"] == 1 and stats["arrive"]["sent"] == 5
    assert stats["card-near-shop"]["sent"] == 1

    # the dry run replays the same journeys to the same outcomes
    dry = server.cli("moments", "test", "arrive", "--person", "a")
    assert [(m["outcome"], m.get("place"), m.get("reason")) for m in dry["moments"]] == [
        ("fires", "shop-12", None), ("capped", "shop-12", "place_cap"), ("fires", "shop-7", None)
    ]
    dry_c = server.cli("moments", "test", "arrive", "--person", "c")
    outcomes = [(m["outcome"], m["reason"]) for m in dry_c["moments"]]
    assert outcomes == [("ignored", "no_consent")] * 2
    dry_b = server.cli("moments", "test", "depart", "--person", "b")
    assert [m["outcome"] for m in dry_b["moments"]] == ["fires"]

    # places in use cannot be removed; unknown places are refused with the fix named
    refused = run_cli(server.data, "moments", "places", "remove", "shop-12", check=False)
    assert refused.returncode == 1 and "arrive" in refused.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "trigger": {"enters": "shop-21"},
                               "actions": [hook(receiver, "/x")]}))  # fmt: skip
    refused = run_cli(server.data, "moments", "add", str(bad), check=False)
    assert refused.returncode == 1 and "unknown place 'shop-21'" in refused.stderr
    assert "shop-12" in refused.stderr  # did you mean
    bad.write_text(json.dumps({"places": [{"name": "nowhere", "lat": 95, "lon": 4}]}))
    refused = run_cli(server.data, "moments", "places", "add", str(bad), check=False)
    assert refused.returncode == 1 and "places[0].lat" in refused.stderr


def test_dwell_fires_after_the_dwell_and_is_cancelled_by_leaving_early(
    located: Server, receiver: Receiver, tmp_path: Path
) -> None:
    server = located
    key = server.add_source("app", "mobile")
    add_rule(server, tmp_path, {
        "name": "lingering",
        "places": [{"name": "cafe", "lat": CAFE[0], "lon": CAFE[1], "radius": 60}],
        "trigger": {"enters": "cafe", "dwell": "3s"},
        "actions": [body(f"{receiver.url}/dwell")],
    })  # fmt: skip
    t0, step = now(), timedelta(seconds=1)
    send(server, key, at(CAFE, t0, "stays"), at(CAFE, t0, "leaves"),
         at(CAFE, t0, "blip"), at(FAR, t0 + step, "blip"))  # in and out in one batch
    send(server, key, at(CAFE, t0 + step * 1, "stays", dx=0.0002))  # still inside
    send(server, key, at(FAR, t0 + step * 1, "leaves"))  # gone after 1 s
    assert stats_of(server)["lingering"]["waiting"] == 1  # stays: the dwell timer runs
    assert receiver.for_path("/dwell") == []  # not before the dwell is over
    got = unique(receiver, "/dwell", 1)
    fired_after = got[0].at - time.monotonic() + (now() - t0).total_seconds()
    assert [r.json()["user"] for r in got] == ["stays"]
    assert fired_after >= 3.0, f"fired {fired_after:.1f} s after entering, before the dwell"
    time.sleep(1.5)
    assert [r.json()["user"] for r in unique(receiver, "/dwell")] == ["stays"]
    stats = stats_of(server)["lingering"]
    assert stats["cancelled_left"] == 2 and stats["sent"] == 1
    dry = server.cli("moments", "test", "lingering", "--person", "leaves")
    assert [(m["outcome"], m["reason"]) for m in dry["moments"]] == [("cancelled", "left")]
    dry = server.cli("moments", "test", "lingering", "--person", "stays")
    assert [m["outcome"] for m in dry["moments"]] == ["fires"]
    # the rule's own place is its own: the workspace list does not know it
    assert api(server, "GET", "/api/places") == []


# -- without a server: geometry, evidence, late events, rule errors ------------------------
def test_evidence_has_an_exit_margin_and_late_events_move_no_state() -> None:
    from seamline.moments.places import Catalog, Place, haversine_m, step

    assert round(haversine_m(*SHOP, *SHOP_7)) == 1676  # flat-earth estimate: 1675.5
    shop = Place("shop", "shop", SHOP[0], SHOP[1], 100.0, frozenset({"door"}))
    catalog = Catalog.build([shop])
    state: dict[str, tuple[bool, Any]] = {}

    def fix(metres_north: float, ts: int) -> dict[str, list[str]] | None:
        event = at(SHOP, datetime(2026, 1, 1), "x", dx=metres_north / 111_195)
        return step(catalog, state, event, ts)

    assert fix(0, 10) == {"at": ["shop"], "entered": ["shop"], "left": []}
    assert fix(105, 11) is None  # inside the 10 m exit margin: no evidence either way
    assert state["shop"] == (True, 10)
    assert fix(50, 9) == {"at": ["shop"], "entered": [], "left": []}  # late: moves nothing
    assert fix(115, 12) == {"at": [], "entered": [], "left": ["shop"]}
    assert step(catalog, state, beacon(True, datetime(2026, 1, 1), "x", "door"), 13) == {
        "at": ["shop"], "entered": ["shop"], "left": []}  # fmt: skip
    zero = track("Location Updated", userId="x",
                 context={"location": {"latitude": 0, "longitude": 0}})  # fmt: skip
    assert step(catalog, state, zero, 14) is None  # 0,0 is "unknown" in SDKs


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"trigger": {"enters": "a", "leaves": "a"}}, "trigger"),
        ({"trigger": {"leaves": "a", "dwell": "5m"}}, "trigger.dwell"),
        ({"trigger": {"event": "X", "dwell": "5m"}}, "trigger.dwell"),
        ({"trigger": {"enters": "a", "dwell": "5 minutes"}}, "trigger.dwell"),
        ({"trigger": {"event": "X"}, "place_cap": {"per": "1d", "max": 1}}, "place_cap"),
        ({"place_cap": {"per": "1d", "max": 0}}, "place_cap.max"),
        ({"places": [{"name": "a", "lat": 52.1}]}, "places[0].lon"),
        ({"places": [{"name": "a", "lat": 52.1, "lon": 4, "radius": 0}]}, "places[0].radius"),
        ({"places": [{"name": "a"}]}, "places[0]"),
        ({"places": [{"name": "a", "lat": 1, "lon": 1, "radus": 5}]}, "places[0].radus"),
        ({"beacons": {"b-1": "nowhere"}}, "beacons.b-1"),
    ],
)
def test_bad_location_rules_name_the_field(change: dict[str, Any], field: str) -> None:
    from seamline.moments.rules import RuleError, parse_rule

    spec: dict[str, Any] = {
        "name": "loc",
        "places": [{"name": "a", "lat": 52.1, "lon": 4.3, "radius": 50}],
        "trigger": {"enters": "a"},
        "actions": [{"webhook": {"url": "https://hooks.example.com/x", "secret": SECRET}}],
    }
    spec.update(change)
    with pytest.raises(RuleError) as refused:
        parse_rule(spec)
    assert f"Rule 'loc': {field}:" in str(refused.value)


def test_place_state_is_durable_dropped_on_opt_out_and_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seamline

    monkeypatch.setenv("SEAMLINE_ALLOW_DESTINATIONS", "127.0.0.0/8")

    def rows(ws: Any) -> list[tuple[Any, ...]]:
        return ws.store.query("SELECT place, inside FROM moment_place_state ORDER BY place")

    with seamline.open(tmp_path / "ws") as ws:
        ws.add_source("app", "mobile")
        ws.add_places(PLACES)
        ws.add_moment({"name": "arrive", "trigger": {"enters": "shop-12"},
                       "actions": [hook(Receiver(SECRET), "/x")]})  # fmt: skip
        stamp = now()
        ws.import_events("app", [at(SHOP, stamp, "g"), at(SHOP, stamp, "h")])
        # kept: the places they were ever inside, and when they were last seen (*)
        assert sorted(rows(ws)) == sorted([("*", True), ("shop-12", True)] * 2)
    with seamline.open(tmp_path / "ws") as ws:  # reopened: still inside, no new enter
        ws.import_events("app", [at(SHOP, stamp + timedelta(seconds=1), "g", dx=0.0001)])
        stats = {m["name"]: m for m in ws.moment_stats()["moments"]}["arrive"]
        assert stats["triggered"] == 2
        ws.import_events("app", [{"type": "identify", "userId": "h", "timestamp": now().isoformat(),
                                  "traits": {"location_consent": "no"}}])  # fmt: skip
        assert len(rows(ws)) == 2  # h opted out: nothing kept about where h is
        ws.forget("g")
        assert rows(ws) == []
