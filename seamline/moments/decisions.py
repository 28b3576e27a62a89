"""Send-time decisions shared by the scheduler and the dry run: quiet hours, payloads.

Pure functions: no store, no clock of their own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from seamline.moments import templates
from seamline.moments.rules import Action, QuietHours, Rule


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The person's time zone (an IANA name), falling back to ``default``, then UTC."""
    for candidate in (name, default, "UTC"):
        if not candidate:
            continue
        try:
            return ZoneInfo(str(candidate))
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")


def quiet_until(now: datetime, quiet: QuietHours, tz: ZoneInfo) -> datetime | None:
    """When the quiet period around ``now`` (naive UTC) ends, in naive UTC; None if not quiet."""
    local = now.replace(tzinfo=UTC).astimezone(tz)
    if not quiet.contains(local.time().replace(second=0, microsecond=0)):
        return None
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)  # 21:00-08:00 and it is 23:00: ends tomorrow morning
    end = datetime.combine(end_day, quiet.end, tzinfo=tz)
    return end.astimezone(UTC).replace(tzinfo=None)


def template_context(
    rule: Rule,
    event: dict[str, Any],
    person: str,
    traits: dict[str, Any],
    instance_id: str,
    delivery_id: str,
    fired_at: datetime,
) -> dict[str, Any]:
    return {
        "event": event,
        "person": {"id": person, "traits": traits},
        "moment": {"name": rule.name, "instance_id": instance_id, "delivery_id": delivery_id,
                   "fired_at": fired_at.isoformat() + "Z"},
    }  # fmt: skip


def default_payload(rule: Rule, event: dict[str, Any], person: str, instance_id: str,
                    delivery_id: str, fired_at: datetime) -> str:  # fmt: skip
    """The webhook body when the action has no template: thin, ids rather than a profile."""
    trigger = {key: event.get(key) for key in ("event", "message_id", "source", "channel",
                                               "unit", "timestamp", "properties")}  # fmt: skip
    if isinstance(event.get("place"), dict):  # location moments: where it happened
        trigger["place"] = event["place"].get("name")
    return json.dumps({
        "type": "moment.fired",
        "moment": rule.name,
        "delivery_id": delivery_id,
        "instance_id": instance_id,
        "person_id": person,
        "fired_at": fired_at.isoformat() + "Z",
        "trigger": trigger,
    }, separators=(",", ":"), default=str)  # fmt: skip


def render_action(rule: Rule, action: Action, context: dict[str, Any]) -> tuple[str, str | None]:
    """(body, title) of one action; :class:`templates.TemplateProblem` when rendering fails."""
    moment = context["moment"]
    if action.body is not None:
        body = templates.render(action.body, context)
    elif action.kind in ("webhook", "webpush"):
        body = default_payload(rule, context["event"], context["person"]["id"],
                               moment["instance_id"], moment["delivery_id"],
                               datetime.fromisoformat(moment["fired_at"].rstrip("Z")))  # fmt: skip
    else:
        event = context["event"]
        body = f"{rule.name}: {event.get('event')} at {event.get('timestamp')}"
    title = templates.render(action.title, context) if action.title is not None else None
    if action.kind == "apprise" and title is None:
        title = rule.name
    if action.kind == "webpush":
        body = webpush_envelope(action, body, context["person"]["traits"])
    return body, title


def webpush_envelope(action: Action, data: str, traits: dict[str, Any]) -> str:
    """The outbox payload of a web push: the subscription travels with the data."""
    from seamline.moments.webpush import WebPushProblem, check_subscription, envelope

    raw: Any = action.subscription
    if action.subscription_trait is not None:
        raw = traits.get(action.subscription_trait)
        if raw is None:
            raise templates.TemplateProblem(
                f"the person has no web push subscription in trait "
                f"'{action.subscription_trait}'"
            )
    try:
        subscription = check_subscription(raw, "subscription")
    except WebPushProblem as exc:
        raise templates.TemplateProblem(str(exc)) from None
    return envelope(subscription, data, action.ttl, action.urgency)
