"""``moments test NAME --person ID``: replay a rule over one person's stored journey.

Nothing is written and nothing is sent. The replay follows the runtime's rules in event
time: a matching trigger opens an instance (one open per person), ``unless`` events in
the window and ``exit`` events cancel it, and when its timer (window + delay + grace) runs
out the send-time checks run: re-entry, frequency cap, quiet hours (in the person's time
zone as of that moment). Moments whose timer has not run out by now are ``waiting``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from seamline.moments import templates
from seamline.moments.decisions import quiet_until, render_action, template_context, zone
from seamline.moments.rules import Rule


@dataclass
class _Open:
    event: dict[str, Any]
    ts: datetime
    due: datetime
    outcome: dict[str, Any]


def _iso(value: datetime) -> str:
    return value.isoformat() + "Z"


def simulate(rule: Rule, person: str, journey: list[tuple[dict[str, Any], datetime]],
             grace: timedelta, now: datetime, default_zone: str,
             traits: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """What the rule would have done for this journey (events in time order)."""
    moments: list[dict[str, Any]] = []
    sends: list[datetime] = []
    absorbed = 0
    current: _Open | None = None
    person_zone: str | None = None

    def fire(instance: _Open) -> None:
        at = instance.due
        outcome = instance.outcome
        outcome["at"] = _iso(at)
        expires_at = at + rule.expires
        if sends and (
            rule.reentry.mode == "once"
            or (rule.reentry.cooldown is not None and at - sends[-1] < rule.reentry.cooldown)
        ):
            outcome.update(outcome="skipped", reason="reentry")
            return
        if not rule.transactional:
            if (
                rule.cap is not None
                and sum(1 for s in sends if s >= at - rule.cap.per) >= rule.cap.max
            ):
                outcome.update(outcome="capped", reason="frequency_cap")
                return
            if rule.quiet_hours is not None:
                until = quiet_until(at, rule.quiet_hours, zone(person_zone, default_zone))
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
        sends.append(at)
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

    for event, ts in journey:
        if current is not None and current.due <= ts:
            fire(current)
            current = None
        if event.get("timezone"):
            person_zone = str(event["timezone"])
        if current is not None:
            reason = rule.cancels(current.event, current.ts, event, ts)
            if reason is not None:
                current.outcome.update(outcome="cancelled", reason=reason, at=_iso(ts),
                                       by={"event": event.get("event"),
                                           "message_id": event.get("message_id")})  # fmt: skip
                current = None
        if rule.trigger.matches(event):
            if current is not None:
                absorbed += 1
                continue
            _deadline, due = rule.timing(ts, grace)
            outcome: dict[str, Any] = {"trigger": {"event": event.get("event"),
                                                   "message_id": event.get("message_id"),
                                                   "timestamp": _iso(ts)},
                                       "due": _iso(due)}  # fmt: skip
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
