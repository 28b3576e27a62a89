"""Trigger matching that stays cheap with many rules on the same event name.

Every stored event is matched against the rules watching its name. With a thousand rules
over a few dozen names that is dozens of filter evaluations per event, most of them numeric
thresholds or exact values on the same property (``properties.amount > 100``,
``properties.amount > 500``, ``properties.plan = gold``...). :class:`TriggerIndex` groups
the rules of one event name by such a condition and finds, with one path lookup and a
bisection (or a dict lookup), the few rules whose condition holds; only those are then
checked in full with :meth:`seamline.moments.rules.Trigger.matches`. Rules without an
indexable condition are checked in full as before, so the result is exactly the same.

Indexable conditions, with the filter semantics of :mod:`seamline.moments.predicates`:

- ``gt``/``gte``/``lt``/``lte`` against a number: holds only when the event's value is a
  number (or numeric text) on the right side of the threshold;
- ``eq``/``in`` against text that is not a number: holds only when the event's value is
  that very text.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from seamline.moments.predicates import (
    MISSING,
    AllOf,
    AnyOf,
    Condition,
    Not,
    Predicate,
    as_number,
    walk,
)

if TYPE_CHECKING:  # runtime imports us
    from seamline.moments.runtime import StoredRule

_ORDERED = ("gt", "gte", "lt", "lte")
JSON_ROOTS = ("properties", "traits", "context")


def _plain_text(value: Any) -> bool:
    """Text that ``_equal`` compares as text only (it is not a number)."""
    return isinstance(value, str) and as_number(value) is None


def _key(condition: Condition) -> tuple[str, str] | None:
    """The index kind of a condition: ("range", op) or ("text", ""), or None."""
    if condition.op in _ORDERED:
        value = condition.value
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            return ("range", condition.op)
        return None
    if condition.op == "eq" and _plain_text(condition.value):
        return ("text", "")
    if condition.op == "in" and condition.value and all(_plain_text(v) for v in condition.value):
        return ("text", "")
    return None


def _indexable(where: Predicate | None) -> Condition | None:
    """A condition that must hold for ``where`` to hold, and that an index can answer."""
    if isinstance(where, Condition):
        return where if _key(where) else None
    if isinstance(where, AllOf):
        for part in where.parts:
            if isinstance(part, Condition) and _key(part):
                return part
    return None


class _Range:
    """Rules whose condition is ``path <op> number``, for one path and one op."""

    def __init__(self, op: str):
        self.op = op
        self.items: list[tuple[float, int]] = []  # (threshold, rule position)
        self.thresholds: list[float] = []

    def add(self, threshold: float, position: int) -> None:
        self.items.append((threshold, position))

    def freeze(self) -> None:
        self.items.sort()
        self.thresholds = [t for t, _ in self.items]

    def find(self, value: Any) -> Iterable[int]:
        x = as_number(value)
        if x is None or x != x:  # not a number (NaN compares false with everything)
            return ()
        op, items, thresholds = self.op, self.items, self.thresholds
        if op == "gt":  # threshold < x
            return (p for _, p in items[: bisect.bisect_left(thresholds, x)])
        if op == "gte":  # threshold <= x
            return (p for _, p in items[: bisect.bisect_right(thresholds, x)])
        if op == "lt":  # threshold > x
            return (p for _, p in items[bisect.bisect_right(thresholds, x) :])
        return (p for _, p in items[bisect.bisect_left(thresholds, x) :])  # lte


class TriggerIndex:
    """The rules of one trigger event name; :meth:`candidates` returns those that match."""

    def __init__(self, rules: list[StoredRule]):
        self.rules = rules
        self.plain: list[int] = []  # positions checked in full for every event
        ranges: dict[tuple[str, str], _Range] = {}
        texts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for position, stored in enumerate(rules):
            trigger = stored.rule.trigger
            condition = _indexable(trigger.where) if trigger.location is None else None
            kind = _key(condition) if condition is not None else None
            if condition is None or kind is None:
                self.plain.append(position)
            elif kind[0] == "range":
                found = ranges.get((condition.path, condition.op))
                if found is None:
                    found = ranges[(condition.path, condition.op)] = _Range(condition.op)
                found.add(float(condition.value), position)
            else:
                values = condition.value if condition.op == "in" else [condition.value]
                for value in dict.fromkeys(values):
                    texts[condition.path][value].append(position)
        for index in ranges.values():
            index.freeze()
        self.ranges = [(path, index) for (path, _op), index in ranges.items()]
        self.texts = {path: dict(values) for path, values in texts.items()}

    def candidates(self, event: dict[str, Any]) -> list[StoredRule]:
        """The rules whose trigger matches ``event``, in the order they were given."""
        positions: list[int] = list(self.plain)
        for path, index in self.ranges:
            positions.extend(index.find(walk(event, path)))
        for path, values in self.texts.items():
            found = walk(event, path)
            if isinstance(found, str) and found in values:
                positions.extend(values[found])
        if len(positions) > 1:
            positions = sorted(set(positions))
        rules = self.rules
        return [rules[p] for p in positions if rules[p].rule.trigger.matches(event)]


def predicate_paths(where: Predicate | None) -> Iterable[str]:
    """Every path a filter reads."""
    if where is None:
        return
    if isinstance(where, Condition):
        yield where.path
    elif isinstance(where, AllOf | AnyOf):
        for part in where.parts:
            yield from predicate_paths(part)
    elif isinstance(where, Not):
        yield from predicate_paths(where.part)


def json_roots(rules: Iterable[StoredRule]) -> frozenset[str]:
    """Which of ``properties``, ``traits`` and ``context`` the rules' filters read (trigger
    and stop filters, and stop ``match`` paths): the event fields that must be decoded
    before matching. Templates read the whole event, decoded once an instance starts."""
    roots: set[str] = set()
    for stored in rules:
        rule = stored.rule
        paths = list(predicate_paths(rule.trigger.where))
        for stop in (*rule.unless, *rule.exits):
            paths.extend(predicate_paths(stop.where))
            paths.extend(stop.match)
        roots.update(path.partition(".")[0] for path in paths)
    return frozenset(roots) & frozenset(JSON_ROOTS)


__all__ = ["JSON_ROOTS", "MISSING", "TriggerIndex", "json_roots", "predicate_paths"]
