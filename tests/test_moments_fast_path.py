"""The moments fast path: the trigger index, partial snapshots, decisions on ingest.

The trigger index (seamline.moments.matching) finds exactly the rules a full check finds.

A thousand rules on a few event names, with numeric thresholds, text values, combined and
``any``/``not`` filters, channel and source restrictions, matched against events whose
values are numbers, numeric text, plain text, booleans, nulls, lists, NaN or missing: the
indexed :meth:`RuleSet.matching` must return the same rules, in the same order, as checking
every rule of the name with :meth:`Trigger.matches`. Partial snapshots decode only the JSON
fields the filters read, and :func:`complete` restores the full event.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seamline
from seamline.moments.matching import TriggerIndex, json_roots
from seamline.moments.rules import parse_rule
from seamline.moments.runtime import RuleSet, StoredRule, complete, snapshot
from seamline.moments.signing import new_secret
from tests.webhook_receiver import Receiver

NAMES = ["Card Declined", "Payment Succeeded", "Order Placed"]
NOW = datetime(2026, 11, 23, 12, 0)
ACTIONS = [{"webhook": {"url": "https://hooks.example.com/x", "secret": new_secret()}}]
VALUES: list[Any] = [0, 1, 5, 5.5, 10, 99.99, 100, 250, -3, 1e9, "5", "100", "7.5", "abc",
                     "gold", "silver", "", "nan", True, False, None, [5], {"a": 1},
                     float("nan"), float("inf")]  # fmt: skip
OPS = ["gt", "gte", "lt", "lte", "eq", "neq", "in", "nin", "exists", "starts_with"]


def _condition(rng: random.Random) -> dict[str, Any]:
    path = rng.choice(["properties.amount", "properties.plan", "properties.card.tier",
                       "context.app.version", "channel"])  # fmt: skip
    op = rng.choice(OPS)
    if op in ("in", "nin"):
        value: Any = rng.sample(["gold", "silver", "5", "bronze", "100"], rng.randint(1, 3))
    elif op == "exists":
        value = rng.choice([True, False])
    elif op == "starts_with":
        value = rng.choice(["go", "1"])
    elif op in ("eq", "neq"):
        value = rng.choice([5, 100, "gold", "silver", "5", "mobile", 7.5])
    else:
        value = rng.choice([0, 1, 5, 7.5, 10, 100, 250, 1000, -1])
    return {"path": path, "op": op, "value": value}


def _rule(rng: random.Random, n: int) -> StoredRule:
    trigger: dict[str, Any] = {"event": rng.choice(NAMES)}
    shape = rng.random()
    if shape < 0.5:
        trigger["where"] = _condition(rng)
    elif shape < 0.7:
        trigger["where"] = {"all": [_condition(rng) for _ in range(rng.randint(1, 3))]}
    elif shape < 0.8:
        trigger["where"] = {"any": [_condition(rng), _condition(rng)]}
    elif shape < 0.85:
        trigger["where"] = {"not": _condition(rng)}
    if rng.random() < 0.2:
        trigger["channel"] = rng.choice(["mobile", "web"])
    if rng.random() < 0.1:
        trigger["source"] = rng.choice(["app", "site"])
    spec = {"name": f"r{n}", "trigger": trigger,
            "actions": ACTIONS}  # fmt: skip
    return StoredRule(f"mr_{n:04d}", 1, parse_rule(spec), NOW, NOW)


def _event(rng: random.Random) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for key in ("amount", "plan"):
        if rng.random() < 0.85:
            properties[key] = rng.choice(VALUES)
    if rng.random() < 0.3:
        properties["card"] = {"tier": rng.choice(VALUES)}
    return {
        "event": rng.choice(NAMES),
        "channel": rng.choice(["mobile", "web", None]),
        "source": rng.choice(["app", "site"]),
        "unit": None,
        "properties": properties,
        "context": {"app": {"version": rng.choice(["4.12.0", "5", 5, None])}},
        "traits": {},
    }


def _full_check(rules: RuleSet, event: dict[str, Any]) -> list[str]:
    return [s.rule_id for s in rules.triggered_by(event) if s.rule.trigger.matches(event)]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_indexed_matching_equals_checking_every_rule(seed: int) -> None:
    rng = random.Random(seed)
    rules = RuleSet([_rule(rng, n) for n in range(rng.randint(1, 300))])
    for _ in range(300):
        event = _event(rng)
        assert [s.rule_id for s in rules.matching(event)] == _full_check(rules, event), event


def test_a_thousand_threshold_rules_are_answered_by_the_index() -> None:
    """The benchmark's shape: ~24 numeric thresholds per name go to ranges, not to the list
    checked in full; a value above half of them matches exactly those."""
    stored = [
        StoredRule(f"mr_{n:04d}", 1, parse_rule({
            "name": f"quiet-{n}",
            "trigger": {"event": "Card Declined", "where": {"properties.amount": {"gt": n}}},
            "actions": ACTIONS,
        }), NOW, NOW)
        for n in range(1000)
    ]  # fmt: skip
    index = TriggerIndex(stored)
    assert index.plain == []
    found = index.candidates({"event": "Card Declined", "properties": {"amount": 499.5}})
    assert [s.rule.name for s in found] == [f"quiet-{n}" for n in range(500)]
    assert index.candidates({"event": "Card Declined", "properties": {"amount": "x"}}) == []
    assert index.candidates({"event": "Card Declined", "properties": {}}) == []


def test_partial_snapshots_decode_only_what_filters_read_and_complete_restores_the_rest() -> None:
    def rule(spec_where: dict[str, Any], unless: dict[str, Any] | None = None) -> StoredRule:
        spec: dict[str, Any] = {"name": "r", "trigger": {"event": "A", "where": spec_where},
                                "actions": ACTIONS}  # fmt: skip
        if unless:
            spec["unless"] = unless
        return StoredRule("mr_1", 1, parse_rule(spec), NOW, NOW)

    assert json_roots([rule({"properties.amount": {"gt": 1}})]) == {"properties"}
    assert json_roots([rule({"channel": "web"})]) == frozenset()
    assert json_roots(
        [
            rule(
                {"channel": "web"},
                {
                    "event": "B",
                    "within": "1m",
                    "match": ["context.device.id"],
                    "where": {"traits.plan": "gold"},
                },
            )
        ]
    ) == {"context", "traits"}
    values = {"message_id": "m1", "source_id": "s1", "type": "track", "event": "A",
              "timestamp": NOW, "received_at": NOW, "properties": json.dumps({"amount": 3}),
              "traits": None, "context": json.dumps({"app": {"version": "1"}})}  # fmt: skip
    full = snapshot(values, "app", "p1")
    partial = snapshot(values, "app", "p1", frozenset({"properties"}))
    assert "context" not in partial and partial["properties"] == {"amount": 3}
    assert complete(partial, values) == full
    assert list(partial) == list(full)  # same field order: the stored trigger JSON is alike


def test_moments_due_at_once_are_decided_in_the_ingest_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the import (ingest) call returns, the immediate moment has fired and its outbox
    row is there: no scheduler round trip. A moment with an ``unless`` window still waits
    for the scheduler. Each webhook arrives once, signed, with the full trigger event (its
    context was decoded when the moment started, although no filter reads it)."""
    monkeypatch.setenv("SEAMLINE_ALLOW_DESTINATIONS", "127.0.0.0/8")
    monkeypatch.setenv("SEAMLINE_MOMENTS_GRACE_SECONDS", "1")
    secret = new_secret()
    receiver = Receiver(secret).start()
    body = '{"version": "{{ event.context.app.version }}", "moment": "{{ moment.name }}"}'
    action = [{"webhook": {"url": f"{receiver.url}/hook", "secret": secret, "body": body}}]
    try:
        with seamline.open(tmp_path / "data") as ws:
            ws.add_source("app", "mobile")
            ws.add_moment({"name": "now", "trigger": {"event": "Card Declined",
                           "where": {"properties.amount": {"gte": 100}}},
                           "transactional": True, "actions": action})  # fmt: skip
            ws.add_moment({"name": "later", "trigger": {"event": "Card Declined"},
                           "unless": {"event": "Payment Succeeded", "within": "1s"},
                           "actions": action})  # fmt: skip
            at = datetime.now(UTC).isoformat()
            events = [{"type": "track", "event": "Card Declined", "userId": "u1",
                       "messageId": f"m{n}", "timestamp": at, "properties": {"amount": amount},
                       "context": {"app": {"version": "4.2"}}}
                      for n, amount in enumerate([250, 20])]  # fmt: skip
            assert ws.import_events("app", events)["stored"] == 2
            stats = {m["name"]: m for m in ws.moment_stats()["moments"]}
            assert stats["now"]["triggered"] == 1 and stats["now"]["fired"] == 1
            assert stats["later"]["triggered"] == 1 and stats["later"]["waiting"] == 1
            sent = ws.deliveries(moment="now")
            assert len(sent) == 1 and sent[0]["status"] in ("pending", "delivered")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and len(receiver.received) < 2:
                time.sleep(0.05)
        got = sorted(
            (r.json()["moment"], r.json()["version"], r.verified) for r in receiver.received
        )
        assert got == [("later", "4.2", True), ("now", "4.2", True)]
    finally:
        receiver.stop()
