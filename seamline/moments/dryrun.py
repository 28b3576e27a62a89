"""``moments test NAME --person ID``: replay a rule over one person's stored journey.

Nothing is written and nothing is sent. The replay follows the runtime's rules in event
time, check for check (``tests/test_moments_location.py`` pins the parity):

- a trigger matches with the same snapshot fields as on ingest (``os_name``, ``timezone``...);
- location rules see the same ``places`` annotation (enters / leaves / at), computed from
  an empty state at the start of the journey, and need the person's consent as of then;
- triggers that happened before the rule was saved, or were stored more than
  ``moments_trigger_max_age_seconds`` after they happened, start nothing (``ignored``),
  unless ``replay_history`` asks to replay the journey as if it were arriving live;
- re-entry is checked when a trigger starts (``skipped``, no instance: later triggers are
  not absorbed by it) and again when it fires;
- one open instance per person (others are absorbed); ``unless`` events in the window,
  ``exit`` events and, for a dwell, leaving the place cancel it;
- when its timer (window or dwell + delay + grace) runs out: consent again, re-entry, the
  frequency cap and the place cap (counting this replay's sends and the moments other
  rules of the same category really fired), quiet hours in the person's time zone as of
  then (latest ``timezone`` of an event, else the ``timezone`` trait, else the default).

Moments whose timer has not run out by now are ``waiting``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from seamline.moments import places as geo
from seamline.moments import templates
from seamline.moments.decisions import quiet_until, render_action, template_context, zone
from seamline.moments.rules import Rule
from seamline.moments.runtime import with_place


@dataclass
class _Open:
    event: dict[str, Any]
    ts: datetime
    due: datetime
    outcome: dict[str, Any]


@dataclass(frozen=True)
class History:
    """What the runtime knows beyond the journey: when the rule was saved, when each event
    was stored, and the moments other rules fired for this person."""

    created_at: datetime | None = None
    max_age: timedelta | None = None
    received: Sequence[datetime | None] = ()  # per journey event
    #: (rule cap scope, place key or None, fired at, transactional) of other rules' moments
    fired: Sequence[tuple[str, str | None, datetime, bool]] = ()
    replay_history: bool = False


@dataclass
class _Sends:
    times: list[datetime] = field(default_factory=list)
    places: list[tuple[datetime, str | None]] = field(default_factory=list)


def _iso(value: datetime) -> str:
    return value.isoformat() + "Z"


def simulate(rule: Rule, person: str, journey: list[tuple[dict[str, Any], datetime]],
             grace: timedelta, now: datetime, default_zone: str, traits: dict[str, Any],
             *, catalog: geo.Catalog | None = None, consent: geo.Consent | None = None,
             history: History | None = None) -> dict[str, Any]:  # fmt: skip
    """What the rule would have done for this journey (events in time order)."""
    history = history or History()
    consent = consent or geo.Consent()
    catalog = catalog if catalog is not None else geo.Catalog.build(rule.places)
    moments: list[dict[str, Any]] = []
    sends = _Sends()
    absorbed = 0
    current: _Open | None = None
    person_zone: str | None = None
    consents = True
    state: dict[str, tuple[bool, Any]] = {}
    others = [(at, key) for scope, key, at, transactional in history.fired
              if scope == rule.cap_scope and not transactional]  # fmt: skip

    def blocked_by_reentry(at: datetime) -> bool:
        return bool(sends.times) and (
            rule.reentry.mode == "once"
            or (rule.reentry.cooldown is not None and at - sends.times[-1] < rule.reentry.cooldown)
        )

    def fire(instance: _Open) -> None:
        at = instance.due
        outcome = instance.outcome
        outcome["at"] = _iso(at)
        expires_at = at + rule.expires
        place = (instance.event.get("place") or {}).get("key")
        if rule.location is not None and not consents:
            outcome.update(outcome="cancelled", reason="no_consent")
            return
        if blocked_by_reentry(at):
            outcome.update(outcome="skipped", reason="reentry")
            return
        if not rule.transactional:
            if rule.cap is not None:
                since = at - rule.cap.per
                sent = sum(1 for s in sends.times if s >= since)
                sent += sum(1 for s, _key in others if since <= s <= at)
                if sent >= rule.cap.max:
                    outcome.update(outcome="capped", reason="frequency_cap")
                    return
            if rule.place_cap is not None and place is not None:
                since = at - rule.place_cap.per
                here = sum(1 for s, key in sends.places if key == place and s >= since)
                here += sum(1 for s, key in others if key == place and since <= s <= at)
                if here >= rule.place_cap.max:
                    outcome.update(outcome="capped", reason="place_cap")
                    return
            if rule.quiet_hours is not None:
                tz = zone(person_zone or traits.get("timezone"), default_zone)
                until = quiet_until(at, rule.quiet_hours, tz)
                if until is not None:
                    if rule.quiet_hours.policy == "drop":
                        outcome.update(outcome="dropped", reason="quiet_hours")
                        return
                    if until >= expires_at:
                        outcome.update(outcome="expired", reason="quiet_hours")
                        return
                    outcome.update(held_until=_iso(until), reason="quiet_hours")
                    at = until
                    outcome["at"] = _iso(at)
        sends.times.append(at)
        sends.places.append((at, place))
        outcome["outcome"] = "fires"
        actions = []
        for index, action in enumerate(rule.actions):
            context = template_context(rule, instance.event, person, traits, "dry-run",
                                       f"dry-run-{index}", at)  # fmt: skip
            entry: dict[str, Any] = {"kind": action.kind, "fallback": action.fallback}
            try:
                entry["body"], entry["title"] = render_action(rule, action, context)
            except templates.TemplateProblem as exc:
                entry["error"] = str(exc)
            actions.append(entry)
        outcome["actions"] = actions

    def trigger_of(event: dict[str, Any], ts: datetime) -> dict[str, Any]:
        return {"trigger": {"event": event.get("event"), "message_id": event.get("message_id"),
                            "timestamp": _iso(ts)}}  # fmt: skip

    for index, (event, ts) in enumerate(journey):
        if current is not None and current.due <= ts:
            fire(current)
            current = None
        if event.get("timezone"):
            person_zone = str(event["timezone"])
        signal = consent.signal(event)
        if signal is not None:
            consents = signal
            if not consents:
                state.clear()  # the runtime keeps no place state for those who opt out
        if catalog:
            event = dict(event)
            event.pop("places", None)
            note = geo.step(catalog, state if consents else {}, event, ts)
            if note is not None:
                event["places"] = note
        if current is not None:
            reason = rule.cancels(current.event, current.ts, event, ts)
            if reason is not None:
                current.outcome.update(outcome="cancelled", reason=reason, at=_iso(ts),
                                       by={"event": event.get("event"),
                                           "message_id": event.get("message_id")})  # fmt: skip
                current = None
        if not rule.trigger.matches(event):
            continue
        if rule.location is not None:
            if not consents:
                moments.append({**trigger_of(event, ts), "outcome": "ignored",
                                "reason": "no_consent"})  # fmt: skip
                continue
            event = with_place(rule, event)
        if not history.replay_history:
            received = history.received[index] if index < len(history.received) else None
            reason = None
            if history.created_at is not None and ts < history.created_at:
                reason = "before_rule"
            elif (history.max_age is not None and received is not None
                  and received - ts > history.max_age):  # fmt: skip
                reason = "too_old"
            if reason is not None:
                moments.append({**trigger_of(event, ts), "outcome": "ignored", "reason": reason})
                continue
        if current is not None:
            absorbed += 1
            continue
        if blocked_by_reentry(ts):
            moments.append({**trigger_of(event, ts), "outcome": "skipped", "reason": "reentry"})
            continue
        _deadline, due = rule.timing(ts, grace)
        outcome: dict[str, Any] = {**trigger_of(event, ts), "due": _iso(due)}
        if "place" in event:
            outcome["place"] = event["place"]["name"]
        moments.append(outcome)
        current = _Open(event, ts, due, outcome)
    if current is not None:
        if current.due <= now:
            fire(current)
        else:
            current.outcome.update(outcome="waiting", at=_iso(current.due))
    summary: dict[str, int] = {}
    for moment in moments:
        summary[moment["outcome"]] = summary.get(moment["outcome"], 0) + 1
    return {"moment": rule.name, "person_id": person, "events": len(journey),
            "moments": moments, "summary": summary, "absorbed_triggers": absorbed}  # fmt: skip
