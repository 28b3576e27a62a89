"""Moment rules: the model, and parsing from YAML or JSON with errors that name the field.

The minimal rule (``DESIGN.md``)::

    name: declined-help
    trigger: {event: Card Declined}
    unless: {event: Payment Succeeded, within: 10m}
    actions:
      - webhook: {url: "https://hooks.example.com/declined", secret: "whsec_..."}

Everything else is optional; the README's "Moments" section documents each field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal

import yaml

from seamline.errors import BadRequest, did_you_mean
from seamline.moments import templates
from seamline.moments.places import Place, PlaceProblem, parse_places
from seamline.moments.predicates import MISSING, Predicate, PredicateError, parse_where, walk
from seamline.moments.signing import SecretError, secret_bytes

DEFAULT_EXPIRES = timedelta(days=1)
MAX_ACTIONS = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
#: Apprise schemes whose host part is a destination we must guard like a webhook URL.
GUARDED_APPRISE = {"json": "http", "jsons": "https", "form": "http", "forms": "https",
                   "xml": "http", "xmls": "https"}  # fmt: skip

_TOP = ("name", "description", "enabled", "trigger", "unless", "exit", "delay", "reentry", "cap",
        "category", "quiet_hours", "transactional", "expires", "grace", "actions", "places",
        "beacons", "place_cap")  # fmt: skip
_LOCATION_KINDS = ("near", "enters", "leaves")


class RuleError(BadRequest):
    """A rule that does not validate; the message names the rule and the field."""

    code = "invalid_rule"


def parse_duration(value: Any, where: str, *, allow_zero: bool = False) -> timedelta:
    """``"10m"`` -> 10 minutes; numbers are seconds. Errors name ``where``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower()) if isinstance(value, str) else None
        if not match:
            raise _Problem(where, f"{value!r} is not a duration; write e.g. 30s, 10m, 2h or 1d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise _Problem(where, "must be longer than zero")
    return timedelta(seconds=seconds)


class _Problem(Exception):
    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where
        self.message = message


# -- the model -----------------------------------------------------------------------------
def _names(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise _Problem(where, "a name or a list of names")
    return frozenset(v.strip() for v in items)


@dataclass(frozen=True)
class Location:
    """``near``, ``enters`` or ``leaves`` one of ``keys`` (place state keys), and ``dwell``."""

    kind: Literal["near", "enters", "leaves"]
    keys: tuple[str, ...]
    names: tuple[str, ...]
    dwell: timedelta | None = None

    def place(self, event: dict[str, Any]) -> str | None:
        """The place key this event satisfies the condition at, or None."""
        places = event.get("places")
        if not isinstance(places, dict):
            return None
        found = places.get({"near": "at", "enters": "entered", "leaves": "left"}[self.kind]) or ()
        return next((key for key in self.keys if key in found), None)

    def describe(self) -> dict[str, Any]:
        shown: dict[str, Any] = {self.kind: list(self.names)}
        if self.dwell is not None:
            shown["dwell_seconds"] = self.dwell.total_seconds()
        return shown


@dataclass(frozen=True)
class Trigger:
    event: str | None  # None: any event that satisfies ``location``
    where: Predicate | None = None
    channels: frozenset[str] | None = None
    sources: frozenset[str] | None = None
    units: frozenset[str] | None = None
    location: Location | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        if self.event is not None and event.get("event") != self.event:
            return False
        if self.location is not None and self.location.place(event) is None:
            return False
        if self.channels is not None and event.get("channel") not in self.channels:
            return False
        if self.sources is not None and event.get("source") not in self.sources:
            return False
        if self.units is not None and event.get("unit") not in self.units:
            return False
        return self.where is None or self.where.evaluate(lambda path: walk(event, path))


@dataclass(frozen=True)
class Stop:
    """An ``unless`` entry (with a window) or an ``exit`` entry (any time after the trigger)."""

    event: str
    within: timedelta | None = None  # None: exit event
    where: Predicate | None = None
    match: tuple[str, ...] = ()  # paths that must be equal on the trigger and this event

    def stops(self, trigger: dict[str, Any], trigger_ts: datetime, event: dict[str, Any],
              event_ts: datetime) -> bool:  # fmt: skip
        """Does ``event`` cancel an instance started by ``trigger``? Only events after it."""
        if event.get("event") != self.event or event_ts < trigger_ts:
            return False
        if event.get("message_id") == trigger.get("message_id") and event.get(
            "source_id"
        ) == trigger.get("source_id"):
            return False
        if self.within is not None and event_ts > trigger_ts + self.within:
            return False
        for path in self.match:
            mine = walk(trigger, path)
            if mine is MISSING or mine != walk(event, path):
                return False
        return self.where is None or self.where.evaluate(lambda path: walk(event, path))


@dataclass(frozen=True)
class Reentry:
    mode: Literal["always", "once", "cooldown"] = "always"
    cooldown: timedelta | None = None

    def describe(self) -> str:
        return f"cooldown {self.cooldown}" if self.mode == "cooldown" else self.mode


@dataclass(frozen=True)
class Cap:
    per: timedelta
    max: int


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    policy: Literal["hold", "drop"] = "hold"

    def contains(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end  # spans midnight, e.g. 21:00-08:00


@dataclass(frozen=True)
class Action:
    kind: Literal["webhook", "apprise", "webpush"]
    url: str
    secrets: tuple[str, ...] = ()
    body: str | None = None  # template; None: the default JSON payload
    title: str | None = None  # template (apprise)
    content_type: str = "application/json"
    fallback: bool = False  # only when the previous action failed
    subscription: str | None = None  # webpush: a fixed subscription (JSON text)
    subscription_trait: str | None = None  # webpush: the person's trait holding it
    ttl: int = 86400  # webpush: seconds the push service keeps an undelivered message
    urgency: str | None = None  # webpush: very-low | low | normal | high

    def describe(self) -> dict[str, Any]:
        """What `moments list` shows: never the secret."""
        shown: dict[str, Any] = {"kind": self.kind, "url": redact_url(self.url)}
        if self.fallback:
            shown["fallback"] = True
        if self.secrets:
            shown["secret"] = [s[:10] + "..." for s in self.secrets]
        return shown


@dataclass(frozen=True)
class Rule:
    name: str
    trigger: Trigger
    actions: tuple[Action, ...]
    unless: tuple[Stop, ...] = ()
    exits: tuple[Stop, ...] = ()
    description: str = ""
    enabled: bool = True
    delay: timedelta = timedelta(0)
    reentry: Reentry = field(default_factory=Reentry)
    cap: Cap | None = None
    category: str | None = None
    quiet_hours: QuietHours | None = None
    transactional: bool = False
    expires: timedelta = DEFAULT_EXPIRES
    grace: timedelta | None = None  # None: the workspace's moments_grace_seconds
    places: tuple[Place, ...] = ()  # the rule's own places (keys "rule-name/place")
    place_cap: Cap | None = None  # per person per place (location rules)
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def window(self) -> timedelta:
        """The longest ``unless`` window: the instance waits this long after the trigger."""
        longest = max((stop.within for stop in self.unless if stop.within), default=timedelta(0))
        return max(longest, self.dwell or timedelta(0))

    @property
    def dwell(self) -> timedelta | None:
        return self.trigger.location.dwell if self.trigger.location else None

    @property
    def location(self) -> Location | None:
        return self.trigger.location

    @property
    def cap_scope(self) -> str:
        return self.category or f"rule:{self.name}"

    def cancels(self, trigger: dict[str, Any], trigger_ts: datetime, event: dict[str, Any],
                event_ts: datetime) -> str | None:  # fmt: skip
        """``"unless"`` or ``"exit"`` when ``event`` cancels an instance of this rule."""
        if any(stop.stops(trigger, trigger_ts, event, event_ts) for stop in self.unless):
            return "unless"
        if any(stop.stops(trigger, trigger_ts, event, event_ts) for stop in self.exits):
            return "exit"
        if self.dwell is not None and trigger_ts <= event_ts <= trigger_ts + self.dwell:
            place = (trigger.get("place") or {}).get("key")
            left = (event.get("places") or {}).get("left") or ()
            if place is not None and place in left:
                return "left"  # a dwell: left the place before the time was up
        return None

    @property
    def stop_events(self) -> frozenset[str]:
        return frozenset(stop.event for stop in (*self.unless, *self.exits))

    def timing(self, trigger_ts: datetime, grace: timedelta) -> tuple[datetime, datetime]:
        """(deadline, due): the window's end in event time, and when the moment fires.

        The grace period only applies when something can cancel the moment: it leaves time
        for late batches (mobile SDKs) whose events happened inside the window.
        """
        deadline = trigger_ts + self.window
        grace = self.grace if self.grace is not None else grace
        wait = grace if self.unless or self.dwell else timedelta(0)
        return deadline, deadline + self.delay + wait

    def describe(self) -> dict[str, Any]:
        """A JSON summary without secrets (``moments list``)."""
        return {
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "trigger": self.trigger.event or (  # a location trigger without an event name
                f"{self.location.kind} {', '.join(self.location.names)}" if self.location else ""),
            **({"location": self.location.describe()} if self.location else {}),
            **({"places": [p.describe() for p in self.places]} if self.places else {}),
            **({"place_cap": {"per_seconds": self.place_cap.per.total_seconds(),
                              "max": self.place_cap.max}} if self.place_cap else {}),
            "unless": [{"event": s.event, "within": s.within.total_seconds() if s.within else None}
                       for s in self.unless],
            "exit": [s.event for s in self.exits],
            "reentry": self.reentry.describe(),
            "cap": {"per_seconds": self.cap.per.total_seconds(), "max": self.cap.max}
            if self.cap else None,
            "quiet_hours": {"start": self.quiet_hours.start.strftime("%H:%M"),
                            "end": self.quiet_hours.end.strftime("%H:%M"),
                            "policy": self.quiet_hours.policy} if self.quiet_hours else None,
            "transactional": self.transactional,
            "expires_seconds": self.expires.total_seconds(),
            "actions": [action.describe() for action in self.actions],
        }  # fmt: skip


def redact_url(url: str) -> str:
    """Scheme, host and path; query strings often carry tokens."""
    return url.split("?", 1)[0]


# -- parsing ---------------------------------------------------------------------------------
def load_text(text: str) -> dict[str, Any]:
    """YAML or JSON text -> a mapping (JSON is YAML, but its errors read better as JSON)."""
    stripped = text.lstrip()
    try:
        data = json.loads(text) if stripped.startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RuleError(f"The rule is neither valid YAML nor JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RuleError("A rule is a mapping with name, trigger and actions (see the README).")
    return data


def _mapping(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Problem(where, f"must be a mapping with {', '.join(allowed)}")
    for key in value:
        if key not in allowed:
            raise _Problem(
                f"{where}.{key}",
                f"unknown field; use {', '.join(allowed)}.{did_you_mean(str(key), allowed)}",
            )
    return value


def _text(value: Any, where: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Problem(where, "is required" if value is None else "must be a non-empty string")
    return value.strip()


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Problem(where, "must be true or false")
    return value


def _where(value: Any, where: str) -> Predicate | None:
    if value is None:
        return None
    try:
        return parse_where(value, where)
    except PredicateError as exc:
        raise _Problem(exc.field, exc.message) from None


def _stops(value: Any, where: str, *, windowed: bool) -> tuple[Stop, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    stops = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        if isinstance(item, str) and not windowed:
            item = {"event": item}
        allowed = ("event", "within", "where", "match") if windowed else ("event", "where", "match")
        spec = _mapping(item, at, allowed)
        event = _text(spec.get("event"), f"{at}.event")
        within = None
        if windowed:
            if "within" not in spec:
                raise _Problem(f"{at}.within", "is required (e.g. within: 10m)")
            within = parse_duration(spec["within"], f"{at}.within")
        match = spec.get("match", ())
        if isinstance(match, str):
            match = (match,)
        if not isinstance(match, list | tuple) or not all(isinstance(m, str) for m in match):
            raise _Problem(f"{at}.match", "a path or a list of paths, e.g. properties.order_id")
        stops.append(Stop(str(event), within, _where(spec.get("where"), f"{at}.where"),
                          tuple(match)))  # fmt: skip
    return tuple(stops)


def _reentry(value: Any) -> Reentry:
    if value is None or value == "always":
        return Reentry()
    if value == "once":
        return Reentry("once")
    if isinstance(value, dict):
        spec = _mapping(value, "reentry", ("cooldown",))
        if "cooldown" in spec:
            return Reentry("cooldown", parse_duration(spec["cooldown"], "reentry.cooldown"))
    choices = ("once", "always", "cooldown")
    raise _Problem(
        "reentry", f"use once, always or {{cooldown: 24h}}{did_you_mean(str(value), choices)}"
    )


def _clock(value: Any, where: str) -> time:
    match = _CLOCK.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise _Problem(where, f"{value!r} is not a time of day; write e.g. '21:00' (quote it)")
    return time(int(match.group(1)), int(match.group(2)))


def _action(value: Any, where: str) -> Action:
    if not isinstance(value, dict):
        raise _Problem(where, "an action is {webhook: {...}}, {apprise: {...}} or "
                       "{webpush: {...}}")  # fmt: skip
    kinds = [k for k in value if k in ("webhook", "apprise", "webpush")]
    if len(kinds) != 1:
        raise _Problem(where, "an action has exactly one of webhook, apprise or webpush")
    kind = kinds[0]
    _mapping(value, where, (kind, "fallback"))
    fallback = _bool(value.get("fallback", False), f"{where}.fallback")
    at = f"{where}.{kind}"
    if kind == "webpush":
        return _webpush(value[kind], at, fallback)
    if kind == "webhook":
        spec = _mapping(value[kind], at, ("url", "secret", "body", "content_type"))
        url = str(_text(spec.get("url"), f"{at}.url"))
        raw = spec.get("secret")
        if raw is None:
            raise _Problem(f"{at}.secret", "is required: a 'whsec_<base64>' secret to sign with "
                           "(`python -c \"import seamline.moments.signing as s; "
                           "print(s.new_secret())\"` makes one)")  # fmt: skip
        secrets = raw if isinstance(raw, list) else [raw]
        for n, secret in enumerate(secrets):
            try:
                secret_bytes(secret)
            except SecretError as exc:
                raise _Problem(f"{at}.secret" + (f"[{n}]" if isinstance(raw, list) else ""),
                               str(exc)) from None  # fmt: skip
        body = _text(spec.get("body"), f"{at}.body", required=False)
        content_type = _text(spec.get("content_type", "application/json"), f"{at}.content_type")
        _template(body, f"{at}.body")
        return Action("webhook", url, tuple(secrets), body, None, str(content_type), fallback)
    spec = _mapping(value[kind], at, ("url", "title", "body"))
    url = str(_text(spec.get("url"), f"{at}.url"))
    if "://" not in url:
        raise _Problem(
            f"{at}.url", "an Apprise URL looks like 'json://host/path' or 'mailto://...'"
        )
    body = _text(spec.get("body"), f"{at}.body", required=False)
    title = _text(spec.get("title"), f"{at}.title", required=False)
    _template(body, f"{at}.body")
    _template(title, f"{at}.title")
    return Action("apprise", url, (), body, title, "text/plain", fallback)


def _webpush(value: Any, at: str, fallback: bool) -> Action:
    from seamline.moments.webpush import URGENCIES, WebPushProblem, check_subscription

    spec = _mapping(value, at, ("subscription", "subscription_trait", "body", "ttl", "urgency"))
    if (spec.get("subscription") is None) == (spec.get("subscription_trait") is None):
        raise _Problem(at, "give subscription: {endpoint, keys: {p256dh, auth}} or "
                       "subscription_trait: NAME (the person's trait holding it)")  # fmt: skip
    subscription = trait = None
    url = ""
    if spec.get("subscription") is not None:
        try:
            checked = check_subscription(spec["subscription"], f"{at}.subscription")
        except WebPushProblem as exc:
            where, _, message = str(exc).partition(": ")
            raise _Problem(where, message) from None
        subscription = json.dumps(checked)
        url = checked["endpoint"]
    else:
        trait = str(_text(spec.get("subscription_trait"), f"{at}.subscription_trait"))
        url = f"trait:{trait}"
    urgency = spec.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        raise _Problem(f"{at}.urgency", f"use one of {', '.join(URGENCIES)}"
                       f"{did_you_mean(str(urgency), URGENCIES)}")  # fmt: skip
    ttl = parse_duration(spec.get("ttl", "1d"), f"{at}.ttl", allow_zero=True)
    body = _text(spec.get("body"), f"{at}.body", required=False)
    _template(body, f"{at}.body")
    return Action("webpush", url, (), body, None, "application/json", fallback,
                  subscription, trait, int(ttl.total_seconds()), urgency)  # fmt: skip


def _template(text: str | None, where: str) -> None:
    if text is None:
        return
    try:
        templates.check(text)
    except templates.TemplateProblem as exc:
        raise _Problem(where, str(exc)) from None


def parse_rule(data: dict[str, Any] | str) -> Rule:
    """Validate a rule (mapping, YAML or JSON text); :class:`RuleError` names the field."""
    spec = load_text(data) if isinstance(data, str) else data
    name = spec.get("name") if isinstance(spec, dict) else None
    label = f"Rule '{name}'" if isinstance(name, str) and name.strip() else "The rule"
    try:
        return _parse(spec)
    except _Problem as problem:
        raise RuleError(f"{label}: {problem.where}: {problem.message}") from None


def _parse(spec: Any) -> Rule:
    spec = _mapping(spec, "rule", _TOP)
    name = str(_text(spec.get("name"), "name"))
    if not _NAME.match(name):
        raise _Problem("name", "use letters, digits, spaces, '-', '_', '.' or ':' (100 at most)")
    if "trigger" not in spec:
        raise _Problem("trigger", "is required, e.g. trigger: {event: Card Declined}")
    tspec = spec["trigger"]
    if isinstance(tspec, str):
        tspec = {"event": tspec}
    tspec = _mapping(tspec, "trigger", ("event", "where", "channel", "source", "unit",
                                        *_LOCATION_KINDS, "dwell"))  # fmt: skip
    try:
        places = parse_places(spec.get("places"), spec.get("beacons"), "places", f"{name}/")
    except PlaceProblem as exc:
        raise _Problem(exc.where, exc.message) from None
    location = _location(tspec, {p.name: p.key for p in places})
    trigger = Trigger(
        event=None if location is not None and tspec.get("event") is None
        else str(_text(tspec.get("event"), "trigger.event")),
        location=location,
        where=_where(tspec.get("where"), "trigger.where"),
        channels=_names(tspec.get("channel"), "trigger.channel"),
        sources=_names(tspec.get("source"), "trigger.source"),
        units=_names(tspec.get("unit"), "trigger.unit"),
    )
    raw_actions = spec.get("actions")
    if not isinstance(raw_actions, list) or not raw_actions:
        raise _Problem("actions", "is required: a list such as [{webhook: {url, secret}}]")
    if len(raw_actions) > MAX_ACTIONS:
        raise _Problem("actions", f"at most {MAX_ACTIONS} actions")
    actions = tuple(_action(a, f"actions[{i}]") for i, a in enumerate(raw_actions))
    if actions[0].fallback:
        raise _Problem("actions[0].fallback", "the first action has nothing to fall back from")
    cap = None
    if spec.get("cap") is not None:
        cspec = _mapping(spec["cap"], "cap", ("per", "max"))
        limit = cspec.get("max")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _Problem("cap.max", "a whole number of at least 1")
        if "per" not in cspec:
            raise _Problem("cap.per", "is required, e.g. cap: {per: 1d, max: 1}")
        cap = Cap(parse_duration(cspec["per"], "cap.per"), limit)
    place_cap = _cap(spec.get("place_cap"), "place_cap")
    if place_cap is not None and location is None:
        raise _Problem("place_cap", "needs a location trigger (near, enters or leaves)")
    quiet = None
    if spec.get("quiet_hours") is not None:
        qspec = _mapping(spec["quiet_hours"], "quiet_hours", ("start", "end", "policy"))
        policy = qspec.get("policy", "hold")
        if policy not in ("hold", "drop"):
            raise _Problem(
                "quiet_hours.policy",
                f"use hold or drop{did_you_mean(str(policy), ('hold', 'drop'))}",
            )
        start = _clock(qspec.get("start"), "quiet_hours.start")
        end = _clock(qspec.get("end"), "quiet_hours.end")
        if start == end:
            raise _Problem("quiet_hours", "start and end are the same time")
        quiet = QuietHours(start, end, policy)
    category = _text(spec.get("category"), "category", required=False)
    return Rule(
        name=name,
        trigger=trigger,
        actions=actions,
        unless=_stops(spec.get("unless"), "unless", windowed=True),
        exits=_stops(spec.get("exit"), "exit", windowed=False),
        description=str(spec.get("description") or ""),
        enabled=_bool(spec.get("enabled", True), "enabled"),
        delay=parse_duration(spec.get("delay", 0), "delay", allow_zero=True),
        reentry=_reentry(spec.get("reentry")),
        cap=cap,
        category=category,
        quiet_hours=quiet,
        transactional=_bool(spec.get("transactional", False), "transactional"),
        expires=parse_duration(spec.get("expires", "1d"), "expires"),
        grace=parse_duration(spec["grace"], "grace", allow_zero=True)
        if spec.get("grace") is not None else None,
        places=places,
        place_cap=place_cap,
        source=dict(spec),
    )  # fmt: skip


def _cap(value: Any, where: str) -> Cap | None:
    if value is None:
        return None
    cspec = _mapping(value, where, ("per", "max"))
    limit = cspec.get("max")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _Problem(f"{where}.max", "a whole number of at least 1")
    if "per" not in cspec:
        raise _Problem(f"{where}.per", f"is required, e.g. {where}: {{per: 1d, max: 1}}")
    return Cap(parse_duration(cspec["per"], f"{where}.per"), limit)


def _location(tspec: dict[str, Any], local: dict[str, str]) -> Location | None:
    """``near|enters|leaves: NAME`` (or ``{place: NAME}``, or a list of names) and ``dwell``."""
    kinds = [k for k in _LOCATION_KINDS if tspec.get(k) is not None]
    if len(kinds) > 1:
        raise _Problem("trigger", "use one of near, enters or leaves, not several")
    if not kinds:
        if tspec.get("dwell") is not None:
            raise _Problem("trigger.dwell", "needs enters or near, e.g. {enters: store-12, "
                           "dwell: 5m}")  # fmt: skip
        return None
    kind = kinds[0]
    value = tspec[kind]
    at = f"trigger.{kind}"
    if isinstance(value, dict):
        value = _mapping(value, at, ("place",)).get("place")
        at += ".place"
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise _Problem(at, "a place name or a list of place names")
    names = tuple(dict.fromkeys(v.strip() for v in items))
    dwell = None
    if tspec.get("dwell") is not None:
        if kind == "leaves":
            raise _Problem("trigger.dwell", "dwell goes with enters or near, not leaves")
        dwell = parse_duration(tspec["dwell"], "trigger.dwell")
    keys = tuple(local.get(n, n) for n in names)
    return Location(kind, keys, names, dwell)  # type: ignore[arg-type]
