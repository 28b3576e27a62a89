"""The moments service: rules in, webhooks out. The Workspace owns one.

It wires the trigger hook into the writer, runs the scheduler and the delivery worker,
and answers the calls the CLI, the JSON API and the Python API share (``add``, ``list``,
``set_enabled``, ``test``, ``stats``, ``deliveries``, ``replay``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from seamline.errors import Conflict, NotFound, did_you_mean
from seamline.events.timestamps import utcnow
from seamline.moments.delivery import CircuitBreaker, DeliveryWorker, RuleVersions
from seamline.moments.destinations import DestinationPolicy
from seamline.moments.dryrun import simulate
from seamline.moments.ids import new_id
from seamline.moments.rules import GUARDED_APPRISE, Rule, parse_rule, redact_url
from seamline.moments.runtime import RuleSet, StoredRule, TriggerHook, stored_snapshot
from seamline.moments.scheduler import Scheduler
from seamline.settings import Settings
from seamline.store import Store, Writer
from seamline.store import moments as tables

log = logging.getLogger("seamline.moments")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() + "Z" if isinstance(v, datetime) else v) for k, v in row.items()}


class MomentsService:
    def __init__(self, store: Store, writer: Writer, settings: Settings,
                 policy: DestinationPolicy | None = None):  # fmt: skip
        self._store = store
        self._writer = writer
        self.settings = settings
        self.policy = policy or DestinationPolicy.from_setting(settings.allow_destinations)
        self.grace = timedelta(seconds=settings.moments_grace_seconds)
        self.hook = TriggerHook(
            self.grace, timedelta(seconds=settings.moments_trigger_max_age_seconds)
        )
        self.versions = RuleVersions(store)
        self.reload()
        writer.add_transaction_hook(self.hook)
        writer.add_listener(self.hook.after_commit)
        poll = max(0.01, settings.moments_poll_ms / 1000)
        self.worker = DeliveryWorker(
            store, writer, self.versions, self.policy,
            poll_seconds=poll,
            retry_base=settings.moments_retry_base_ms / 1000,
            max_attempts=settings.moments_max_attempts,
            timeout=float(settings.moments_delivery_timeout_seconds),
            breaker=CircuitBreaker(settings.moments_breaker_failures,
                                   float(settings.moments_breaker_seconds)),
        )  # fmt: skip
        # No callbacks into this object: the writer holds the hook until the process ends,
        # and a cycle through it would keep the closed DuckDB connection alive.
        self.scheduler = Scheduler(store, writer, self.hook, settings.moments_timezone, poll,
                                   self.worker.wake)  # fmt: skip
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> MomentsService:
        self.scheduler.start()
        self.worker.start()
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.scheduler.stop()
            self.worker.stop()

    def reload(self) -> None:
        with self._store.cursor() as cur:
            self.hook.rules = RuleSet.load(cur, self.hook.rules)

    def rule_version(self, rule_id: str, version: int) -> Rule | None:
        return self.versions.get(rule_id, version)

    # -- rules ------------------------------------------------------------------------------
    def check_destinations(self, rule: Rule) -> None:
        """The SSRF guard at save time (it runs again before every attempt)."""
        for index, action in enumerate(rule.actions):
            where = f"Rule '{rule.name}': actions[{index}].{action.kind}.url"
            if action.kind == "webhook":
                self.policy.check_url(action.url, where)
                continue
            scheme = action.url.split("://", 1)[0].lower()
            if scheme in GUARDED_APPRISE:
                self.policy.check_url(GUARDED_APPRISE[scheme] + action.url[len(scheme) :], where)

    def add(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        """Save a rule (YAML or JSON text, or a mapping); a rule of the same name is replaced."""
        rule = parse_rule(definition)
        self.check_destinations(rule)
        text = json.dumps(rule.source, default=str)
        _rule_id, version, created = self._writer.call(
            lambda con: tables.save_rule(con, new_id("mr"), rule.name, text, rule.enabled, utcnow())
        ).result()
        self.reload()
        return {"name": rule.name, "version": version, "created": created,
                "enabled": rule.enabled, "rule": rule.describe()}  # fmt: skip

    def _stored(self, name: str) -> StoredRule:
        rules = self.hook.rules
        if name not in rules.by_name:
            hint = did_you_mean(name, rules.by_name) or " `seamline moments list` shows them."
            raise NotFound(f"No moment named '{name}'.{hint}", code="unknown_moment")
        return rules.by_name[name]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {**s.rule.describe(), "version": s.version,
             "created_at": s.created_at.isoformat() + "Z",
             "updated_at": s.updated_at.isoformat() + "Z"}
            for s in self.hook.rules.rules
        ]  # fmt: skip

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        self._stored(name)
        self._writer.call(lambda con: tables.set_enabled(con, name, enabled, utcnow())).result()
        self.reload()
        return {"name": name, "enabled": enabled}

    def test(self, name: str, person: str) -> dict[str, Any]:
        """Dry run of one rule over one (canonical) person's stored journey."""
        stored = self._stored(name)
        with self._store.cursor() as cur:
            rows = tables.journey(cur, person)
            sources = tables.source_names(cur)
            _zones, traits = tables.person_context(cur, [person])
        journey = [stored_snapshot(row, sources) for row in rows]
        return simulate(stored.rule, person, journey, self.grace, utcnow(),
                        self.settings.moments_timezone, traits.get(person, {}))  # fmt: skip

    # -- reporting ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._store.cursor() as cur:
            raw = tables.stats(cur)
        out = []
        for stored in self.hook.rules.rules:
            s = raw.get(stored.rule_id, {})
            out.append({
                "name": stored.rule.name,
                "enabled": stored.rule.enabled,
                "triggered": s.get("triggered", 0),
                "waiting": s.get("instances:waiting", 0) + s.get("instances:held", 0),
                "cancelled_unless": s.get("instances:cancelled:unless", 0),
                "cancelled_exit": s.get("instances:cancelled:exit", 0),
                "capped": s.get("instances:capped", 0),
                "quiet_hours": s.get("instances:held", 0) + s.get("instances:dropped", 0)
                + s.get("instances:expired:quiet_hours", 0),
                "skipped_reentry": s.get("instances:skipped", 0),
                "expired": s.get("instances:expired", 0),
                "fired": s.get("instances:fired", 0),
                "sent": s.get("deliveries:delivered", 0),
                "failed": s.get("deliveries:failed", 0) + s.get("deliveries:expired", 0),
                "pending": s.get("deliveries:pending", 0),
                "late_cancels": s.get("late_cancels", 0),
                "absorbed": s.get("counter:absorbed", 0),
                "reentry_blocked": s.get("counter:reentry_blocked", 0),
                "too_old": s.get("counter:too_old", 0),
                "before_rule": s.get("counter:before_rule", 0),
            })  # fmt: skip
        return {"moments": out}

    def deliveries(self, failed: bool = False, limit: int = 100,
                   moment: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        rule_id = self._stored(moment).rule_id if moment else None
        with self._store.cursor() as cur:
            rows = tables.list_deliveries(cur, failed_only=failed, rule_id=rule_id, limit=limit)
        names = {s.rule_id: s.rule.name for s in self.hook.rules.rules}
        out = []
        for row in rows:
            row = _jsonable(row)
            row["moment"] = names.get(row["rule_id"])
            row["target"] = redact_url(row["target"])
            out.append(row)
        return out

    def replay(self, delivery_id: str) -> dict[str, Any]:
        """Re-queue a failed or expired delivery under the same id (same ``webhook-id``)."""
        with self._store.cursor() as cur:
            found = tables.delivery(cur, delivery_id)
        if found is None:
            raise NotFound(f"No delivery '{delivery_id}'; `seamline moments deliveries --failed` "
                           "lists the dead letters.", code="unknown_delivery")  # fmt: skip
        rule = self.rule_version(found["rule_id"], found["rule_version"])
        expires = rule.expires if rule else timedelta(days=1)
        result = self._writer.call(
            lambda con: tables.replay(con, delivery_id, utcnow(), expires)
        ).result()  # fmt: skip
        if result is None or result["status"] != "pending":
            raise Conflict(
                f"Delivery '{delivery_id}' is {found['status']}; only failed or expired "
                "deliveries can be replayed.",
                code="not_replayable",
            )
        self.worker.wake()
        out = _jsonable(result)
        out["target"] = redact_url(out["target"])
        return out
