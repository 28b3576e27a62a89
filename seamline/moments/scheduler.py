"""The scheduler: fires trigger instances whose timer has run out.

A thread looks for due instances (a read), then decides them in one writer transaction
(:func:`fire_due`): expiry, re-entry, frequency cap and quiet hours, in that order, and for
an instance that fires, one outbox row per action. ``UNIQUE (instance_id, action_index)``
and the instance's status change, committed together, make the decision happen once even
if the process dies around it. Nothing is kept in memory: after ``kill -9`` the next
scheduler finds the same rows.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from seamline.errors import Overloaded
from seamline.events.timestamps import utcnow
from seamline.moments import templates
from seamline.moments.decisions import quiet_until, render_action, template_context, zone
from seamline.moments.ids import new_id
from seamline.moments.places import Consent
from seamline.moments.runtime import RuleSet, TriggerHook, consent_given, idle_backoff
from seamline.store import Store, Writer
from seamline.store import moments as tables
from seamline.store import places as place_tables

log = logging.getLogger("seamline.moments")
BATCH = 500
TIMER_SLACK = 0.1  # seconds; triggers that are due at once wake the scheduler directly


@dataclass(frozen=True)
class FireReport:
    decided: int
    fired: int
    deliveries: int


def fire_due(con: tables.Connection, rules: RuleSet, now: datetime, default_zone: str,
             limit: int = BATCH, consent: Consent | None = None,
             only: Sequence[str] | None = None) -> FireReport:  # fmt: skip
    """Decide every due instance (inside the caller's writer transaction); ``only``: of
    these instance ids (the ingest transaction decides the moments it starts due at once).

    Location moments are also checked for consent (withdrawn since the trigger: cancelled)
    and for their place cap (``place_cap``: per person per place, after ``cap``).
    """
    due = tables.due_instances(con, now, limit, only)
    if not due:
        return FireReport(0, 0, 0)
    persons = sorted({row[2] for row in due})
    rule_ids = sorted({row[1] for row in due})
    due_rules = [rules.by_id[r].rule for r in rule_ids if r in rules.by_id]
    # read only what these rules' decisions and messages use (each read is a statement in
    # the writer's transaction): time zones and traits for quiet hours, templates and web
    # push; the last firing for re-entry
    needs_context = any(
        (rule.quiet_hours is not None and not rule.transactional)
        or any(a.body is not None or a.title is not None or a.kind == "webpush"
               for a in rule.actions)
        for rule in due_rules
    )  # fmt: skip
    zones, traits = tables.person_context(con, persons) if needs_context else ({}, {})
    reentry = [r for r in rule_ids if r in rules.by_id
               and rules.by_id[r].rule.reentry.mode != "always"]  # fmt: skip
    last = tables.last_fired(con, reentry, persons) if reentry else {}
    # only the due rules' caps are checked (against moments of their category)
    longest_cap = max((rule.cap.per for rule in due_rules if rule.cap and not rule.transactional),
                      default=None)  # fmt: skip
    recent = tables.fired_since(con, persons, now - longest_cap) if longest_cap else []
    located = [row[2] for row in due if _location_rule(rules, row[1])]
    refused: set[str] = set()
    longest_place_cap = max((s.rule.place_cap.per for s in rules.rules if s.rule.place_cap),
                            default=None)  # fmt: skip
    at_places: list[tuple[str, str, str, datetime]] = []
    if located:
        consent = consent or Consent()
        signals = place_tables.consent_signals(
            con, sorted(set(located)), consent.trait, consent.revoked_event, consent.granted_event
        )
        refused = {p for p, signal in signals.items() if not consent_given(signal, consent)}
        if longest_place_cap is not None:
            at_places = place_tables.fired_at_places(con, sorted(set(located)),
                                                     now - longest_place_cap)  # fmt: skip
    decisions: list[tuple[str, str, str | None, datetime, datetime | None]] = []
    deliveries: list[tuple[Any, ...]] = []
    unrendered: list[tuple[str, str, int, str]] = []

    def decide_one(instance_id: str, rule_id: str, person: str, due_at: datetime,
                   trigger: str) -> int:  # fmt: skip
        """Append this instance's decision (and outbox rows); 1 when it fires."""
        stored = rules.by_id.get(rule_id)
        if stored is None or not stored.rule.enabled:
            decisions.append((instance_id, "cancelled", "disabled", now, now))
            return 0
        rule = stored.rule
        expires_at = due_at + rule.expires
        event = json.loads(trigger)
        place = (event.get("place") or {}).get("key") if rule.location is not None else None
        key = (rule_id, person)
        if now >= expires_at:
            decisions.append((instance_id, "expired", "expired", now, now))
            return 0
        if rule.location is not None and person in refused:
            decisions.append((instance_id, "cancelled", "no_consent", now, now))
            return 0
        if key in last and (
            rule.reentry.mode == "once"
            or (rule.reentry.cooldown is not None and now - last[key] < rule.reentry.cooldown)
        ):
            decisions.append((instance_id, "skipped", "reentry", now, now))
            return 0
        if not rule.transactional:
            if rule.cap is not None:
                since = now - rule.cap.per
                sent = sum(
                    1 for who, other, at in recent
                    if who == person and at >= since and other in rules.by_id
                    and rules.by_id[other].rule.cap_scope == rule.cap_scope
                    and not rules.by_id[other].rule.transactional
                )  # fmt: skip
                if sent >= rule.cap.max:
                    decisions.append((instance_id, "capped", "frequency_cap", now, now))
                    return 0
            if rule.place_cap is not None and place is not None:
                since = now - rule.place_cap.per
                here = sum(
                    1 for who, other, key, at in at_places
                    if who == person and key == place and at >= since and other in rules.by_id
                    and rules.by_id[other].rule.cap_scope == rule.cap_scope
                    and not rules.by_id[other].rule.transactional
                )  # fmt: skip
                if here >= rule.place_cap.max:
                    decisions.append((instance_id, "capped", "place_cap", now, now))
                    return 0
            if rule.quiet_hours is not None:
                person_zone = zones.get(person) or traits.get(person, {}).get("timezone")
                until = quiet_until(now, rule.quiet_hours, zone(person_zone, default_zone))
                if until is not None:
                    if rule.quiet_hours.policy == "drop":
                        decisions.append((instance_id, "dropped", "quiet_hours", now, now))
                    elif until >= expires_at:
                        decisions.append((instance_id, "expired", "quiet_hours", now, now))
                    else:
                        decisions.append((instance_id, "held", "quiet_hours", until, None))
                    return 0
        decisions.append((instance_id, "fired", None, now, now))
        last[key] = now
        recent.append((person, rule_id, now))
        if place is not None:
            at_places.append((person, rule_id, place, now))
        for index, action in enumerate(rule.actions):
            delivery_id = new_id("msg")
            context = template_context(rule, event, person, traits.get(person, {}),
                                       instance_id, delivery_id, now)  # fmt: skip
            status, error = ("standby" if action.fallback else "pending"), None
            try:
                body, title = render_action(rule, action, context)
            except templates.TemplateProblem as exc:
                body, title, status, error = "", None, "failed", str(exc)[:500]
            deliveries.append((
                delivery_id, instance_id, index, rule_id, stored.version, person, action.kind,
                action.url, title, body, action.content_type, status, now, expires_at, now, now,
            ))  # fmt: skip
            if error is not None:
                unrendered.append((delivery_id, instance_id, index, error))
        return 1

    fired = 0
    for instance_id, rule_id, person, _trigger_ts, _deadline, due_at, _status, trigger in due:
        marks = (len(decisions), len(deliveries), len(unrendered))
        try:
            fired += decide_one(instance_id, rule_id, person, due_at, trigger)
        except Exception:  # one bad instance must not stop every other moment
            log.exception("moment instance %s could not be decided", instance_id)
            del decisions[marks[0] :], deliveries[marks[1] :], unrendered[marks[2] :]
            decisions.append((instance_id, "cancelled", "error", now, now))
    tables.decide(con, decisions)
    created = tables.insert_deliveries(con, deliveries)
    for delivery_id, instance_id, index, error in unrendered:  # its fallback takes over
        tables.fail_unrendered(con, delivery_id, error)
        tables.settle_fallbacks(con, instance_id, index, False, now)
    return FireReport(len(decisions), fired, created)


def _location_rule(rules: RuleSet, rule_id: str) -> bool:
    stored = rules.by_id.get(rule_id)
    return stored is not None and stored.rule.location is not None


class Scheduler:
    """The thread that runs :func:`fire_due` when instances come due."""

    def __init__(self, store: Store, writer: Writer, hook: TriggerHook, default_zone: str,
                 poll_seconds: float, on_fired: Callable[[], None]):  # fmt: skip
        self._store = store
        self._writer = writer
        self._hook = hook  # its rules are the rules in force; its event wakes us
        self._default_zone = default_zone
        self._poll = poll_seconds
        self._on_fired = on_fired
        self._wake = hook.due
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seamline-moments-scheduler",
                                        daemon=True)  # fmt: skip

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next_due(self) -> datetime | None:
        with self._store.cursor() as cur:
            return tables.next_fire_at(cur)

    def _run(self) -> None:
        idle = self._poll
        while not self._stopping.is_set():
            self._wake.clear()  # before the read: a wake from now on ends the wait below
            wait: float | None = self._poll
            try:
                wait = self._tick()
            except Overloaded:  # the writer is stopping or the store is failing: back off
                wait = max(self._poll, 1.0)
            except Exception:  # the scheduler must outlive one bad tick
                log.exception("the moments scheduler failed; retrying")
                wait = max(self._poll, 1.0)
            if wait is None:  # no instance waits: the trigger hook wakes us when one starts
                wait, idle = idle, idle_backoff(idle, self._poll)
            else:
                idle = self._poll
            self._wake.wait(wait)

    def _fire(self, con: tables.Connection) -> FireReport:
        return fire_due(con, self._hook.rules, utcnow(), self._default_zone,
                        consent=self._hook.consent)  # fmt: skip

    def _tick(self) -> float | None:
        """Fire what is due; returns how long to sleep, or None when no instance waits."""
        while not self._stopping.is_set():
            next_due = self._next_due()
            now = utcnow()
            if next_due is None:
                return None
            if next_due > now:
                # timers a little apart fire together: each tick is a writer transaction
                return min(self._poll, max(TIMER_SLACK, (next_due - now).total_seconds()))
            report = self._writer.call(self._fire).result(timeout=120)
            if report.deliveries:
                self._on_fired()
            if report.decided < BATCH:
                return 0.0 if report.decided else self._poll
        return 0.0
