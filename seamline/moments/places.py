"""Places for location-aware moments: geofences, beacons, and where a person is.

A *place* has a centre and a radius in metres (a geofence, read from an event's
``context.location.latitude/longitude``), beacon ids (``Beacon Entered`` / ``Beacon Exited``
events with ``properties.beacon_id``), or both. Places come from the workspace list
(``seamline moments places add FILE``) or from a rule's own ``places:``; a rule's place
``store`` is kept apart from everyone else's as ``rule-name/store``.

An event is *evidence* about some places: a GPS fix says, for every geofence, inside or
outside; a beacon event says inside or outside for the places of that beacon. Comparing
the evidence with the person's previous state gives the transitions rules use::

    >>> catalog = Catalog.build([Place("shop", "shop", 52.0, 4.0, 100.0)])
    >>> state: dict[str, tuple[bool, Any]] = {}
    >>> step(catalog, state, {"context": {"location": {"latitude": 52.0, "longitude": 4.0}}}, 1)
    {'at': ['shop'], 'entered': ['shop'], 'left': []}

To avoid flapping at the edge, leaving a geofence takes a fix beyond the radius plus a
margin (10 % of the radius, at least 10 m); a fix inside the margin is no evidence.
Everything here is pure: the runtime keeps the state in the store, the dry run in a dict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
BEACON_ENTERED = "Beacon Entered"
BEACON_EXITED = "Beacon Exited"
EXIT_MARGIN = 0.1
MIN_EXIT_MARGIN_M = 10.0
MAX_RADIUS_M = 100_000.0
_METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180
_PLACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,99}$")


class PlaceProblem(Exception):
    """A place that does not validate; ``where`` names the field."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres.

    >>> round(haversine_m(52.3731, 4.8922, 52.3791, 4.9003))
    865
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Place:
    key: str  # what state is kept under: the name, or "rule-name/name" for a rule's own place
    name: str
    latitude: float | None = None
    longitude: float | None = None
    radius: float = 100.0  # metres
    beacons: frozenset[str] = frozenset()

    @property
    def geofenced(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    def evidence(self, latitude: float, longitude: float) -> bool | None:
        """True inside, False clearly outside, None in the exit margin (or no geofence)."""
        if self.latitude is None or self.longitude is None:
            return None
        exit_at = self.radius + max(MIN_EXIT_MARGIN_M, EXIT_MARGIN * self.radius)
        # the distance is at least the north-south arc: most places are rejected without trig
        if abs(latitude - self.latitude) * _METRES_PER_DEGREE > exit_at:
            return False
        distance = haversine_m(self.latitude, self.longitude, latitude, longitude)
        if distance <= self.radius:
            return True
        if distance > exit_at:
            return False
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "lat": self.latitude, "lon": self.longitude,
                "radius": self.radius, "beacons": sorted(self.beacons)}  # fmt: skip


def _number(value: Any, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlaceProblem(where, f"must be a number between {low:g} and {high:g}")
    if not low <= float(value) <= high:
        raise PlaceProblem(where, f"must be between {low:g} and {high:g}")
    return float(value)


def parse_place(spec: Any, where: str, key_prefix: str = "") -> Place:
    """``{name, lat, lon, radius, beacons}`` -> :class:`Place` (``latitude``/``longitude``
    are accepted for ``lat``/``lon``)."""
    allowed = ("name", "lat", "lon", "latitude", "longitude", "radius", "beacons")
    if not isinstance(spec, dict):
        raise PlaceProblem(where, "a place is a mapping with name, lat, lon, radius, beacons")
    for key in spec:
        if key not in allowed:
            from seamline.errors import did_you_mean

            raise PlaceProblem(f"{where}.{key}", f"unknown field; use name, lat, lon, radius, "
                               f"beacons.{did_you_mean(str(key), allowed)}")  # fmt: skip
    name = spec.get("name")
    if not isinstance(name, str) or not _PLACE_NAME.match(name.strip()):
        raise PlaceProblem(f"{where}.name", "is required: letters, digits, space, - _ . : "
                           "(100 at most)")  # fmt: skip
    name = name.strip()
    lat = spec.get("lat", spec.get("latitude"))
    lon = spec.get("lon", spec.get("longitude"))
    latitude = longitude = None
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise PlaceProblem(f"{where}.{'lat' if lat is None else 'lon'}",
                               "a geofence needs both lat and lon")  # fmt: skip
        latitude = _number(lat, f"{where}.lat", -90, 90)
        longitude = _number(lon, f"{where}.lon", -180, 180)
    radius = 100.0
    if spec.get("radius") is not None:
        radius = _number(spec["radius"], f"{where}.radius", 1, MAX_RADIUS_M)
    raw = spec.get("beacons") or []
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list) or not all(isinstance(b, str) and b.strip() for b in raw):
        raise PlaceProblem(f"{where}.beacons", "a beacon id or a list of beacon ids")
    beacons = frozenset(b.strip() for b in raw)
    if latitude is None and not beacons:
        raise PlaceProblem(where, f"place '{name}' needs lat and lon (and radius in metres), "
                           "or beacons, or both")  # fmt: skip
    return Place(f"{key_prefix}{name}", name, latitude, longitude, radius, beacons)


def parse_places(places: Any, beacons: Any, where: str = "places",
                 key_prefix: str = "") -> tuple[Place, ...]:  # fmt: skip
    """A ``places:`` list plus an optional ``beacons: {beacon id: place name}`` mapping."""
    if places is None:
        places = []
    if not isinstance(places, list):
        raise PlaceProblem(where, "a list of places, e.g. [{name: store-12, lat: 52.37, "
                           "lon: 4.89, radius: 150}]")  # fmt: skip
    parsed: dict[str, Place] = {}
    for i, spec in enumerate(places):
        place = parse_place(spec, f"{where}[{i}]", key_prefix)
        if place.name in parsed:
            raise PlaceProblem(f"{where}[{i}].name", f"'{place.name}' is listed twice")
        parsed[place.name] = place
    if beacons is not None:
        if not isinstance(beacons, dict):
            raise PlaceProblem("beacons", "a mapping of beacon id to place name")
        for beacon, name in beacons.items():
            if not isinstance(name, str) or name not in parsed:
                raise PlaceProblem(f"beacons.{beacon}", f"{name!r} is not a place listed under "
                                   f"{where}")  # fmt: skip
            old = parsed[name]
            parsed[name] = Place(old.key, old.name, old.latitude, old.longitude, old.radius,
                                 old.beacons | {str(beacon)})  # fmt: skip
    return tuple(parsed.values())


@dataclass(frozen=True)
class Catalog:
    """Every place in force, by state key, and beacon id -> place keys."""

    places: dict[str, Place] = field(default_factory=dict)
    beacons: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, places: Iterable[Place]) -> Catalog:
        by_key: dict[str, Place] = {}
        beacons: dict[str, list[str]] = {}
        for place in places:
            by_key[place.key] = place
            for beacon in place.beacons:
                beacons.setdefault(beacon, []).append(place.key)
        return cls(by_key, {b: tuple(keys) for b, keys in beacons.items()})

    def __bool__(self) -> bool:
        return bool(self.places)

    def observe(self, event: dict[str, Any]) -> dict[str, bool]:
        """What this event says about each place: {key: inside}; {} when nothing."""
        seen: dict[str, bool] = {}
        name = event.get("event")
        if name in (BEACON_ENTERED, BEACON_EXITED):
            props = event.get("properties") or {}
            beacon = props.get("beacon_id") if isinstance(props, dict) else None
            for key in self.beacons.get(str(beacon), ()) if beacon is not None else ():
                seen[key] = name == BEACON_ENTERED
        fix = location_of(event)
        if fix is not None:
            for key, place in self.places.items():
                if key in seen or not place.geofenced:
                    continue
                inside = place.evidence(*fix)
                if inside is not None:
                    seen[key] = inside
        return seen


def location_of(event: dict[str, Any]) -> tuple[float, float] | None:
    """``context.location`` latitude and longitude as numbers, when both are valid."""
    context = event.get("context")
    location = context.get("location") if isinstance(context, dict) else None
    if not isinstance(location, dict):
        return None
    lat, lon = location.get("latitude"), location.get("longitude")
    try:
        latitude, longitude = float(lat), float(lon)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if isinstance(lat, bool) or isinstance(lon, bool) or not (
        -90 <= latitude <= 90 and -180 <= longitude <= 180
    ) or (latitude == 0 and longitude == 0):  # 0,0 is what SDKs send for "unknown"
        return None
    return latitude, longitude


def maybe_located(context: Any, event: Any) -> bool:
    """A cheap pre-filter on the raw row: could this event carry location evidence?"""
    if event in (BEACON_ENTERED, BEACON_EXITED):
        return True
    if isinstance(context, str):
        return '"latitude"' in context
    return isinstance(context, dict) and isinstance(context.get("location"), dict)


#: The state key holding when the person's latest location evidence happened.
LAST_SEEN = "*"


def step(catalog: Catalog, state: dict[str, tuple[bool, Any]], event: dict[str, Any],
         ts: Any) -> dict[str, list[str]] | None:  # fmt: skip
    """Apply one event's evidence to ``state`` (place key -> (inside, event time)); returns
    the annotation, or None when the event says nothing.

    ``at``: places this event alone puts the person in; ``entered``/``left``: changes of
    state (an unknown state counts as outside). State is kept only for places the person
    has been inside (so a thousand geofences do not mean a thousand rows per person), plus
    :data:`LAST_SEEN`: an event older than the person's latest evidence (a late batch)
    moves nothing.
    """
    seen = catalog.observe(event)
    if not seen:
        return None
    at = sorted(k for k, inside in seen.items() if inside)
    last = state.get(LAST_SEEN)
    if last is not None and ts is not None and last[1] is not None and last[1] > ts:
        return {"at": at, "entered": [], "left": []}
    entered, left = [], []
    for key, inside in seen.items():
        was = state[key][0] if key in state else False
        if inside and not was:
            entered.append(key)
        elif was and not inside:
            left.append(key)
        if inside or key in state:
            state[key] = (inside, ts)
    state[LAST_SEEN] = (True, ts)
    return {"at": at, "entered": sorted(entered), "left": sorted(left)}


OPT_OUT_VALUES = frozenset({"false", "no", "0", "off", "denied", "revoked", "none"})


def opted_out(value: Any) -> bool:
    """Is a consent trait's value a refusal? ``false``, ``"no"``, ``0``, ``"denied"``..."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in OPT_OUT_VALUES


@dataclass(frozen=True)
class Consent:
    """How a person opts out of location moments (settings ``moments_location_consent_*``)."""

    trait: str = "location_consent"
    revoked_event: str = "Location Consent Revoked"
    granted_event: str = "Location Consent Granted"

    def signal(self, event: dict[str, Any]) -> bool | None:
        """True (consents), False (opts out) or None: what this event says."""
        name = event.get("event")
        if name == self.revoked_event:
            return False
        if name == self.granted_event:
            return True
        traits = event.get("traits")
        if event.get("type") == "identify" and isinstance(traits, dict) and self.trait in traits:
            return not opted_out(traits[self.trait])
        return None
