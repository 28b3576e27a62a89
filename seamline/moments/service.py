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

from seamline.errors import BadRequest, Conflict, NotFound, did_you_mean
from seamline.events.timestamps import utcnow
from seamline.moments import apprise_guard
from seamline.moments import places as geo
from seamline.moments.delivery import CircuitBreaker, DeliveryWorker, RuleVersions
from seamline.moments.destinations import DestinationPolicy
from seamline.moments.dryrun import History, simulate
from seamline.moments.ids import new_id
from seamline.moments.rules import (
    Rule,
    RuleError,
    load_text,
    parse_rule,
    redact_url,
)
from seamline.moments.runtime import RuleSet, StoredRule, TriggerHook, stored_snapshot
from seamline.moments.scheduler import Scheduler
from seamline.settings import Settings
from seamline.store import Store, Writer
from seamline.store import moments as tables
from seamline.store import places as place_tables

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
        self.consent = geo.Consent(
            settings.moments_location_consent_trait,
            settings.moments_location_consent_revoked_event,
            settings.moments_location_consent_granted_event,
        )
        self.hook = TriggerHook(
            self.grace, timedelta(seconds=settings.moments_trigger_max_age_seconds),
            consent=self.consent,
        )  # fmt: skip
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
            vapid_key=settings.moments_vapid_private_key,
            vapid_subject=settings.moments_vapid_subject,
        )  # fmt: skip
        # No callbacks into this object: the writer holds the hook until the process ends,
        # and a cycle through it would keep the closed DuckDB connection alive.
        self.scheduler = Scheduler(store, writer, self.hook, settings.moments_timezone, poll,
                                   self.worker.wake)  # fmt: skip
        self.hook.default_zone = settings.moments_timezone
        self.hook.outbox = self.worker.wake_event
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> MomentsService:
        self.scheduler.start()
        self.worker.start()
        self.hook.fire_at_once = True  # moments due at once are decided on ingest
        self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._started = False
            self.hook.fire_at_once = False
            self.scheduler.stop()
            self.worker.stop()

    def reload(self) -> None:
        with self._store.cursor() as cur:
            rules = RuleSet.load(cur, self.hook.rules)
            workspace = self._workspace_places(cur)
        self.hook.catalog = geo.Catalog.build([*workspace.values(), *rules.own_places()])
        self.hook.rules = rules

    @staticmethod
    def _workspace_places(cur: tables.Connection) -> dict[str, geo.Place]:
        found = {}
        for definition in place_tables.load_places(cur):
            try:
                place = geo.parse_place(definition, "place")
            except geo.PlaceProblem as exc:  # one broken row must not stop the rest
                log.error("place %r cannot be loaded: %s", definition.get("name"), exc)
                continue
            found[place.name] = place
        return found

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
            if action.kind == "webpush":
                where = f"Rule '{rule.name}': actions[{index}].webpush"
                if not (self.settings.moments_vapid_private_key
                        and self.settings.moments_vapid_subject):  # fmt: skip
                    raise RuleError(f"{where}: web push needs the settings "
                                    "moments_vapid_private_key and moments_vapid_subject "
                                    "(SEAMLINE_MOMENTS_VAPID_PRIVATE_KEY, "
                                    "SEAMLINE_MOMENTS_VAPID_SUBJECT).")  # fmt: skip
                if action.subscription is not None:
                    self.policy.check_url(action.url, f"{where}.subscription.endpoint")
                continue
            apprise_guard.check(self.policy, action.url, where)

    def check_places(self, rule: Rule) -> None:
        """A location rule names places of its own or of the workspace list."""
        location = rule.location
        if location is None:
            return
        own = {p.name for p in rule.places}
        with self._store.cursor() as cur:
            known = self._workspace_places(cur)
        for name in location.names:
            if name not in own and name not in known:
                hint = did_you_mean(name, [*own, *known]) or (
                    " Define it under the rule's places: or add it to the workspace with "
                    "`seamline moments places add FILE`."
                )
                raise RuleError(f"Rule '{rule.name}': trigger.{location.kind}: unknown place "
                                f"'{name}'.{hint}")  # fmt: skip

    # -- places -----------------------------------------------------------------------------
    def add_places(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        """Save workspace places: ``{places: [{name, lat, lon, radius, beacons}], beacons:
        {beacon id: place}}`` (YAML or JSON); a place of the same name is replaced."""
        spec = load_text(definition) if isinstance(definition, str) else definition
        if not isinstance(spec, dict) or "places" not in spec:
            raise BadRequest("A places file is a mapping with places: [{name, lat, lon, radius, "
                             "beacons}] (see the README).", code="invalid_places")  # fmt: skip
        unknown = set(spec) - {"places", "beacons"}
        if unknown:
            raise BadRequest(f"places file: unknown field(s) {sorted(unknown)}; use places and "
                             "beacons.", code="invalid_places")  # fmt: skip
        try:
            parsed = geo.parse_places(spec.get("places"), spec.get("beacons"))
        except geo.PlaceProblem as exc:
            raise BadRequest(f"places file: {exc.where}: {exc.message}",
                             code="invalid_places") from None  # fmt: skip
        definitions = [place.describe() for place in parsed]
        self._writer.call(
            lambda con: place_tables.save_places(con, definitions, utcnow())
        ).result()  # fmt: skip
        self.reload()
        return {"saved": [p["name"] for p in definitions], "places": self.list_places()}

    def list_places(self) -> list[dict[str, Any]]:
        with self._store.cursor() as cur:
            return [p.describe() for p in self._workspace_places(cur).values()]

    def remove_place(self, name: str) -> dict[str, Any]:
        users = [s.rule.name for s in self.hook.rules.rules
                 if s.rule.location and name in s.rule.location.keys]  # fmt: skip
        if users:
            raise Conflict(f"Place '{name}' is used by moment(s) {', '.join(users)}; change "
                           "or disable them first.", code="place_in_use")  # fmt: skip
        removed = self._writer.call(lambda con: place_tables.remove_place(con, name)).result()
        if not removed:
            raise NotFound(f"No place named '{name}'. `seamline moments places list` shows "
                           "them.", code="unknown_place")  # fmt: skip
        self.reload()
        return {"name": name, "removed": True}

    def add(self, definition: str | dict[str, Any]) -> dict[str, Any]:
        """Save a rule (YAML or JSON text, or a mapping); a rule of the same name is replaced."""
        rule = parse_rule(definition)
        self.check_destinations(rule)
        self.check_places(rule)
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

    def test(self, name: str, person: str, replay_history: bool = False) -> dict[str, Any]:
        """Dry run of one rule over one (canonical) person's stored journey."""
        stored = self._stored(name)
        rules = self.hook.rules
        with self._store.cursor() as cur:
            rows = tables.journey(cur, person)
            sources = tables.source_names(cur)
            _zones, traits = tables.person_context(cur, [person])
            since = min((row[5] for row in rows), default=utcnow())
            fired = tables.fired_since(cur, [person], since)
            at_places = {(r, at): key for _p, r, key, at in
                         place_tables.fired_at_places(cur, [person], since)}  # fmt: skip
        journey = [stored_snapshot(row, sources) for row in rows]
        others = [
            (rules.by_id[rule_id].rule.cap_scope, at_places.get((rule_id, at)), at,
             rules.by_id[rule_id].rule.transactional)
            for _p, rule_id, at in fired if rule_id != stored.rule_id and rule_id in rules.by_id
        ]  # fmt: skip
        history = History(
            created_at=stored.created_at,
            max_age=self.hook.max_age,
            received=[row[-1] for row in rows],
            fired=others,
            replay_history=replay_history,
        )
        return simulate(stored.rule, person, journey, self.grace, utcnow(),
                        self.settings.moments_timezone, traits.get(person, {}),
                        catalog=self.hook.catalog, consent=self.consent,
                        history=history)  # fmt: skip

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
                "no_consent": s.get("counter:no_consent", 0)
                + s.get("instances:cancelled:no_consent", 0),
                "cancelled_left": s.get("instances:cancelled:left", 0),
                "place_capped": s.get("instances:capped:place_cap", 0),
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
