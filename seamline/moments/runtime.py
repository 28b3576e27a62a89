"""Moments on the write path: start and cancel trigger instances in the ingest transaction.

:class:`TriggerHook` is a writer transaction hook, so it runs after identity has stamped
every row with its person and after the rows are appended, and what it writes commits
with the events or not at all. For each group it

1. cancels open instances (of the same resolved person) that an ``unless`` event inside
   the window, or an ``exit`` event, now stops; an ``unless`` event for an instance that
   already fired is counted as a *late cancel* (it cannot be recalled);
2. starts an instance for each newly stored event that matches a rule's trigger, unless
   the person already has one open for that rule or re-entry forbids it; an instance whose
   cancelling event was stored earlier (events arrive out of order) starts cancelled.

The instance row is the timer: ``fire_at`` = event time + unless window + delay + grace.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from seamline.events import EventRows
from seamline.events.timestamps import utcnow
from seamline.moments import places as geo
from seamline.moments.ids import new_id
from seamline.moments.matching import JSON_ROOTS, TriggerIndex, json_roots
from seamline.moments.rules import Rule, parse_rule
from seamline.store import moments as tables
from seamline.store import places as place_tables
from seamline.store.stored import StoredKeys

log = logging.getLogger("seamline.moments")

#: Event fields copied into a snapshot (templates and filters see them by these names).
_FIELDS = ("message_id", "source_id", "type", "event", "channel", "unit", "user_id",
           "anonymous_id", "os_name", "os_version", "app_name", "app_version", "device_type",
           "device_model", "locale", "timezone")  # fmt: skip
#: Extra event columns of :func:`seamline.store.moments.person_events` rows, in order.
EXTRA_FIELDS = ("user_id", "anonymous_id", "os_name", "os_version", "app_name", "app_version",
                "device_type", "device_model", "locale", "timezone", "received_at")  # fmt: skip


#: the longest an idle scheduler or outbox sleeps between looks at the store
IDLE_POLL_MAX = 2.0  # seconds


def idle_backoff(wait: float, poll: float) -> float:
    """The next sleep of a loop that found nothing at all to do: twice the last, up to
    ``IDLE_POLL_MAX`` (or ``poll``, if that is longer).

    Whatever creates work wakes the loop: the trigger hook (a delivery decided at once, an
    instance due within ``IDLE_POLL_MAX``: a later one is seen by the next look), a fired
    timer, a replay. During heavy ingest every look is a read that competes with the
    writer for the GIL and the cores. Any work found starts over at ``poll``.
    """
    return min(wait * 2, max(IDLE_POLL_MAX, poll))


@dataclass(frozen=True)
class StoredRule:
    rule_id: str
    version: int
    rule: Rule
    created_at: datetime
    updated_at: datetime


class RuleSet:
    """The rules in force, indexed by the event names they watch."""

    def __init__(self, stored: list[StoredRule] | None = None):
        self.rules = list(stored or [])
        self.by_id = {s.rule_id: s for s in self.rules}
        self.by_name = {s.rule.name: s for s in self.rules}
        self.by_trigger: dict[str, list[StoredRule]] = defaultdict(list)
        self.by_stop: dict[str, list[StoredRule]] = defaultdict(list)
        self.by_any: list[StoredRule] = []  # location triggers without an event name
        self.by_leave: list[StoredRule] = []  # dwell rules: leaving the place cancels
        for s in self.rules:
            if not s.rule.enabled:
                continue
            if s.rule.trigger.event is None:
                self.by_any.append(s)
            else:
                self.by_trigger[s.rule.trigger.event].append(s)
            for name in s.rule.stop_events:
                self.by_stop[name].append(s)
            if s.rule.dwell is not None:
                self.by_leave.append(s)
        self.watched = frozenset(self.by_trigger) | frozenset(self.by_stop)
        self.located = any(s.rule.enabled and s.rule.location for s in self.rules)
        # per trigger name, the rules indexed by their filters (seamline.moments.matching)
        self.index = {name: TriggerIndex(found) for name, found in self.by_trigger.items()}
        self.stop_ids = {name: frozenset(s.rule_id for s in found)
                         for name, found in self.by_stop.items()}  # fmt: skip
        # the JSON fields of an event the filters read: only these are decoded to match
        enabled = [s for s in self.rules if s.rule.enabled]
        self.roots = frozenset(JSON_ROOTS) if self.located else json_roots(enabled)

    def own_places(self) -> list[geo.Place]:
        """The places rules define for themselves (enabled rules only)."""
        return [p for s in self.rules if s.rule.enabled for p in s.rule.places]

    def triggered_by(self, event: dict[str, Any]) -> list[StoredRule]:
        found = self.by_trigger.get(event["event"], []) if event["event"] is not None else []
        return found + self.by_any if self.by_any and "places" in event else found

    def matching(self, event: dict[str, Any]) -> list[StoredRule]:
        """The rules whose trigger matches ``event`` (what ``triggered_by`` + ``matches``
        would keep, found through the per-name indexes)."""
        index = self.index.get(event["event"]) if event["event"] is not None else None
        found = index.candidates(event) if index is not None else []
        if self.by_any and "places" in event:
            found += [s for s in self.by_any if s.rule.trigger.matches(event)]
        return found

    @classmethod
    def load(cls, con: tables.Connection, previous: RuleSet | None = None) -> RuleSet:
        """The stored rules; those unchanged since ``previous`` are not parsed again."""
        known = {(s.rule_id, s.version): s.rule for s in previous.rules} if previous else {}
        stored = []
        rows = tables.load_rules(con)
        for rule_id, _name, version, enabled, definition, created, updated in rows:
            rule = known.get((rule_id, version))
            if rule is None:
                try:
                    rule = parse_rule(json.loads(definition))
                except Exception as exc:  # noqa: BLE001 - one broken row must not stop the rest
                    log.error("moment rule %s cannot be loaded: %s", rule_id, exc)
                    continue
            if rule.enabled != enabled:
                rule = _with_enabled(rule, enabled)
            stored.append(StoredRule(rule_id, version, rule, created, updated))
        return cls(stored)


def consent_given(signal: tuple[str, Any] | None, consent: geo.Consent) -> bool:
    """A :func:`seamline.store.places.consent_signals` value -> may location moments run?"""
    if signal is None:
        return True  # no opt-out on record
    kind, value = signal
    if kind == "event":
        return bool(value != consent.revoked_event)
    return not geo.opted_out(value)


def with_place(rule: Rule, event: dict[str, Any]) -> dict[str, Any]:
    """The trigger snapshot of a location rule, with the place it matched at."""
    location = rule.location
    key = location.place(event) if location is not None else None
    if key is None or location is None:
        return event
    name = location.names[location.keys.index(key)]
    return {**event, "place": {"key": key, "name": name}}


def _with_enabled(rule: Rule, enabled: bool) -> Rule:
    from dataclasses import replace

    return replace(rule, enabled=enabled)


def _json(text: Any) -> Any:
    if text is None or isinstance(text, dict):
        return text or {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def snapshot(values: dict[str, Any], source: str | None, person: str,
             roots: frozenset[str] | tuple[str, ...] = JSON_ROOTS) -> dict[str, Any]:  # fmt: skip
    """The event as rules, templates and payloads see it (JSON-safe).

    ``roots`` names the JSON fields (``properties``, ``traits``, ``context``) to decode; a
    partial snapshot (what matching needs) lacks the others until :func:`complete`.
    """
    event = {name: values.get(name) for name in _FIELDS}
    ts = values["timestamp"]
    event.update(
        source=source,
        person_id=person,
        timestamp=ts.isoformat() + "Z" if isinstance(ts, datetime) else ts,
    )
    for root in JSON_ROOTS:
        if root in roots:
            event[root] = _json(values.get(root))
    return event


def complete(event: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Decode what a partial :func:`snapshot` left out, keeping the field order."""
    if all(root in event for root in JSON_ROOTS):
        return event
    for root in JSON_ROOTS:
        decoded = event.pop(root) if root in event else _json(values.get(root))
        event[root] = decoded
    return event


def stored_snapshot(
    row: tuple[Any, ...], sources: dict[str, str]
) -> tuple[dict[str, Any], datetime]:
    """A :func:`seamline.store.moments.person_events` row -> (snapshot, timestamp).

    The snapshot has the same fields as the one the runtime takes on ingest, so filters on
    ``os_name``, ``app_version``, ``timezone``... match in the dry run as they do live.
    """
    (person, source_id, message_id, event, kind, ts, channel, unit, properties, traits,
     context) = row[:11]  # fmt: skip
    values = {"source_id": source_id, "message_id": message_id, "event": event, "type": kind,
              "timestamp": ts, "channel": channel, "unit": unit, "properties": properties,
              "traits": traits, "context": context}  # fmt: skip
    values.update(zip(EXTRA_FIELDS, row[11:], strict=False))
    return snapshot(values, sources.get(source_id), person), ts


class TriggerHook:
    """Install with ``writer.add_transaction_hook(hook)``; swap rules with :attr:`rules`."""

    def __init__(self, grace: timedelta, max_age: timedelta,
                 due: threading.Event | None = None,
                 consent: geo.Consent | None = None):  # fmt: skip
        self.rules = RuleSet()
        self.catalog = geo.Catalog()  # workspace places + rules' own places
        self.consent = consent or geo.Consent()
        self.grace = grace
        self.max_age = max_age
        self.due = due or threading.Event()  # set when an instance may be due: wakes the scheduler
        # Moments due at once (no unless window, no delay) are decided in the ingest
        # transaction itself, as the scheduler would decide them just after it, while the
        # service runs (it sets this); ``outbox`` then wakes the delivery worker.
        self.fire_at_once = False
        self.default_zone = "UTC"
        self.outbox = threading.Event()
        self._sources: dict[str, str] = {}
        self.due_soon = False
        self.outbox_soon = False
        self.errors = 0

    # -- helpers -------------------------------------------------------------------------
    def source_names(self, con: tables.Connection, ids: set[str]) -> dict[str, str]:
        if not ids <= self._sources.keys():
            self._sources = tables.source_names(con)
        return self._sources

    def after_commit(self, rows: EventRows) -> None:
        """Writer listener: wake the scheduler when an instance may be due already, and the
        delivery worker when this commit queued deliveries."""
        if self.outbox_soon:
            self.outbox_soon = False
            self.outbox.set()
        if self.due_soon:
            self.due_soon = False
            self.due.set()

    # -- the hook --------------------------------------------------------------------------
    def __call__(self, con: tables.Connection, rows: EventRows,
                 stored: StoredKeys) -> None:  # fmt: skip
        """Runs in the ingest transaction. A bug here must not cost events: anything but an
        engine error (which has aborted the transaction anyway) is logged and counted, and
        the group commits without its moments."""
        try:
            self._evaluate(con, rows, stored)
        except tables.StoreError:
            raise
        except Exception:
            self.errors += 1
            log.exception("moments could not be evaluated for %d events", len(rows))

    def _evaluate(self, con: tables.Connection, rows: EventRows,
                  stored: StoredKeys) -> None:  # fmt: skip
        rules = self.rules
        located = rules.located and bool(self.catalog)
        if not (rules.watched or located) or not len(rows):
            return
        cols = rows.columns
        persons_col, names = cols["person_id"], cols["event"]
        sources_col, messages = cols["source_id"], cols["message_id"]
        contexts = cols["context"]
        consent = self.consent
        picked = [
            i for i, name in enumerate(names)
            if (name in rules.watched or (located and (
                geo.maybe_located(contexts[i], name) or name in
                (consent.revoked_event, consent.granted_event) or cols["type"][i] == "identify"
            ))) and persons_col[i] is not None and (sources_col[i], messages[i]) in stored
        ]  # fmt: skip
        if not picked:
            return
        sources = self.source_names(con, {sources_col[i] for i in picked})
        canon = tables.canonical_persons(con, {persons_col[i] for i in picked})
        events: list[tuple[dict[str, Any], datetime, datetime]] = []
        # only the columns a snapshot reads, and only the JSON fields the filters read: the
        # rest is decoded for the few events that start an instance (_start)
        used = [(name, cols[name]) for name in (*_FIELDS, "timestamp", "received_at", *JSON_ROOTS)
                if name in cols]  # fmt: skip
        roots = rules.roots
        raw: dict[int, dict[str, Any]] = {}
        for i in picked:
            values = {name: column[i] for name, column in used}
            values["timestamp"] = rows.moment("timestamp", i)
            values["received_at"] = rows.moment("received_at", i)
            person = canon[persons_col[i]]
            event = snapshot(values, sources.get(sources_col[i]), person, roots)
            raw[id(event)] = values
            events.append((event, values["timestamp"], values["received_at"]))
        events.sort(key=lambda item: item[1])
        refused: set[str] = set()
        if located:
            refused = self._locate(con, [(e, ts) for e, ts, _ in events])
        stops = [(e, ts) for e, ts, _ in events if e["event"] in rules.by_stop
                 or (rules.by_leave and (e.get("places") or {}).get("left"))]  # fmt: skip
        if stops:
            self._cancel(con, rules, stops)
        starts = [item for item in events
                  if item[0]["event"] in rules.by_trigger or "places" in item[0]]  # fmt: skip
        if starts:
            self._start(con, rules, starts, sources, refused,
                        [(e, ts) for e, ts, _ in events if "places" in e], raw)  # fmt: skip

    def _locate(self, con: tables.Connection,
                events: list[tuple[dict[str, Any], datetime]]) -> set[str]:  # fmt: skip
        """Annotate located events with ``places`` (at / entered / left) and keep each
        person's place state; returns the persons who opted out (their state is dropped)."""
        persons = sorted({e["person_id"] for e, _ in events})
        consent = self.consent
        signals = place_tables.consent_signals(
            con, persons, consent.trait, consent.revoked_event, consent.granted_event
        )
        refused = {p for p, signal in signals.items() if not consent_given(signal, consent)}
        if refused:
            place_tables.clear_state(con, sorted(refused))
        kept = [p for p in persons if p not in refused]
        known = place_tables.load_state(con, kept) if kept else {}
        changed: dict[tuple[str, str], tuple[str, str, bool, datetime, datetime]] = {}
        for event, ts in events:
            person = event["person_id"]
            if person in refused:  # annotated from no state, kept nowhere: counted, not sent
                note = geo.step(self.catalog, {}, event, ts)
                if note is not None:
                    event["places"] = note
                continue
            state = known.setdefault(person, {})
            before = dict(state)
            note = geo.step(self.catalog, state, event, ts)
            if note is None:
                continue
            event["places"] = note
            for key, value in state.items():
                if before.get(key) != value:
                    changed[(person, key)] = (person, key, value[0], ts, ts)
        place_tables.save_state(con, list(changed.values()))
        return refused

    def _cancel(self, con: tables.Connection, rules: RuleSet,
                events: list[tuple[dict[str, Any], datetime]]) -> None:  # fmt: skip
        by_person: dict[str, list[tuple[dict[str, Any], datetime]]] = defaultdict(list)
        rule_ids: set[str] = set()
        names: set[str] = set()
        for event, ts in events:
            by_person[event["person_id"]].append((event, ts))
            names.add(event["event"])
            if (event.get("places") or {}).get("left"):
                rule_ids.update(s.rule_id for s in rules.by_leave)
        for name in names:  # once per name: hundreds of rules may stop on one event
            rule_ids.update(rules.stop_ids.get(name, ()))
        earliest = min(ts for _, ts in events)
        found = tables.open_instances(con, sorted(rule_ids), sorted(by_person), earliest)
        updates: list[tuple[str, str, str | None]] = []
        late: list[str] = []
        for instance_id, rule_id, person, trigger_ts, _deadline, status, trigger in found:
            stored_rule = rules.by_id.get(rule_id)
            if stored_rule is None:
                continue
            trigger_event = _json(trigger)
            for event, ts in by_person.get(person, ()):
                reason = stored_rule.rule.cancels(trigger_event, trigger_ts, event, ts)
                if reason is None:
                    continue
                if status == "fired":
                    if reason == "unless":
                        late.append(instance_id)
                else:
                    updates.append((instance_id, "cancelled", reason))
                break
        tables.set_status(con, updates)
        tables.count_late_cancels(con, late)

    def _start(self, con: tables.Connection, rules: RuleSet,
               events: list[tuple[dict[str, Any], datetime, datetime]],
               sources: dict[str, str], refused: set[str],
               located: list[tuple[dict[str, Any], datetime]],
               raw: dict[int, dict[str, Any]] | None = None) -> None:  # fmt: skip
        """``raw``: id(partial snapshot) -> its column values, to decode it in full."""
        counters: dict[tuple[str, str], int] = defaultdict(int)
        candidates: list[tuple[StoredRule, dict[str, Any], datetime]] = []
        raw = raw or {}
        for event, ts, received in events:
            for stored_rule in rules.matching(event):
                trigger = complete(event, raw[id(event)]) if id(event) in raw else event
                if stored_rule.rule.location is not None:
                    if event["person_id"] in refused:
                        counters[(stored_rule.rule_id, "no_consent")] += 1
                        continue
                    trigger = with_place(stored_rule.rule, event)
                if ts < stored_rule.created_at:
                    counters[(stored_rule.rule_id, "before_rule")] += 1
                elif received - ts > self.max_age:
                    counters[(stored_rule.rule_id, "too_old")] += 1
                else:
                    candidates.append((stored_rule, trigger, ts))
        if not candidates:
            tables.bump_counters(con, counters)
            return
        persons = sorted({event["person_id"] for _, event, _ in candidates})
        rule_ids = sorted({s.rule_id for s, _, _ in candidates})
        taken = {(r[1], r[2]) for r in tables.open_instances(con, rule_ids, persons)}
        reentry = sorted({s.rule_id for s, _, _ in candidates if s.rule.reentry.mode != "always"})
        last = tables.last_fired(con, reentry, persons) if reentry else {}
        now = utcnow()
        new: list[list[Any]] = []
        for stored_rule, event, ts in candidates:
            rule = stored_rule.rule
            key = (stored_rule.rule_id, event["person_id"])
            if key in taken:
                counters[(stored_rule.rule_id, "absorbed")] += 1
                continue
            if key in last and (
                rule.reentry.mode == "once"
                or (rule.reentry.cooldown is not None and ts - last[key] < rule.reentry.cooldown)
            ):
                counters[(stored_rule.rule_id, "reentry_blocked")] += 1
                continue
            taken.add(key)
            deadline, due = rule.timing(ts, self.grace)
            new.append([
                new_id("mi"), stored_rule.rule_id, stored_rule.version, event["person_id"],
                event["source_id"], event["message_id"], ts, deadline, due, due, "waiting", None,
                json.dumps(event, default=str), now, rule, event,
            ])  # fmt: skip
        self._cancel_from_history(con, new, sources)
        self._cancel_from_batch(new, located)
        rows = [tuple(item[:14]) for item in new]
        tables.insert_instances(con, rows)
        tables.bump_counters(con, counters)
        if self.fire_at_once:
            self._fire_at_once(con, [item[0] for item in new
                                     if item[10] == "waiting" and item[9] <= now])  # fmt: skip
            new = [item for item in new if item[9] > now]
        # the scheduler may sleep up to IDLE_POLL_MAX when idle: wake it for anything due
        # before its next look
        soon = now + timedelta(seconds=IDLE_POLL_MAX)
        if any(item[10] == "waiting" and item[9] <= soon for item in new):
            self.due_soon = True

    def _fire_at_once(self, con: tables.Connection, instance_ids: list[str]) -> None:
        """Decide instances that are due already, in this transaction, with the scheduler's
        own :func:`seamline.moments.scheduler.fire_due`: one commit and no scheduler round
        trip between the trigger's ack and its outbox row. Whatever fails here is undone and
        left to the scheduler."""
        if not instance_ids:
            return
        from seamline.moments.scheduler import BATCH, fire_due  # it imports this module

        try:
            report = fire_due(con, self.rules, utcnow(), self.default_zone,
                              consent=self.consent, only=instance_ids)  # fmt: skip
        except tables.StoreError:
            raise
        except Exception:
            self.errors += 1
            log.exception("%d moments due at once could not be decided; the scheduler will",
                          len(instance_ids))  # fmt: skip
            tables.undecide(con, instance_ids)
            self.due_soon = True
            return
        if report.deliveries:
            self.outbox_soon = True
        if len(instance_ids) > BATCH:  # fire_due decides at most BATCH: the scheduler goes on
            self.due_soon = True

    @staticmethod
    def _cancel_from_batch(new: list[list[Any]],
                           located: list[tuple[dict[str, Any], datetime]]) -> None:  # fmt: skip
        """A dwell whose person leaves later in the same batch starts cancelled: place
        annotations exist only for the events being stored, not in the history."""
        dwelling = [item for item in new if item[10] == "waiting" and item[14].dwell is not None]
        for item in dwelling:
            rule: Rule = item[14]
            for event, ts in located:
                reason = rule.cancels(item[15], item[6], event, ts)
                if event["person_id"] == item[3] and reason is not None:
                    item[10], item[11] = "cancelled", reason
                    break

    def _cancel_from_history(self, con: tables.Connection, new: list[list[Any]],
                             sources: dict[str, str]) -> None:  # fmt: skip
        """New instances whose cancelling event is already stored start cancelled."""
        names = sorted({name for item in new for name in item[14].stop_events})
        if not names:
            return
        persons = sorted({item[3] for item in new})
        since = min(item[6] for item in new)
        by_person: dict[str, list[tuple[dict[str, Any], datetime]]] = defaultdict(list)
        for row in tables.person_events(con, persons, names, since):
            by_person[row[0]].append(stored_snapshot(row, sources))
        for item in new:
            rule: Rule = item[14]
            for event, ts in by_person.get(item[3], ()):
                reason = rule.cancels(item[15], item[6], event, ts)
                if reason is not None:
                    item[10], item[11] = "cancelled", reason
                    break
