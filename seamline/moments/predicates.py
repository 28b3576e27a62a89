"""Property filters for rules: a small expression tree, interpreted (never ``eval``).

Two spellings compile to the same tree:

- a mapping of paths to values: ``{properties.amount: {gte: 20}, channel: [mobile, web]}``
  (a plain value means ``eq``, a list means ``in``);
- the explicit tree: ``{all: [{path: properties.plan, op: in, value: [pro, team]}]}`` with
  ``all``, ``any`` and ``not``.

A path names an event field (``event``, ``channel``, ``unit``, ``source``, ``os_name``,
``app_version``, ...) or walks into ``properties``, ``traits`` or ``context`` with dots.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seamline.errors import did_you_mean

OPS = ("eq", "neq", "in", "nin", "gt", "gte", "lt", "lte", "contains", "starts_with", "regex",
       "exists")  # fmt: skip
MISSING: Any = object()
Lookup = Callable[[str], Any]


class PredicateError(ValueError):
    """A filter that does not parse; ``field`` says where (e.g. ``trigger.where``)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def as_number(value: Any) -> float | None:
    """A number, or numeric text, as a float (booleans and anything else: None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    a, b = as_number(left), as_number(right)  # 20, 20.0 and "20" (sent as text) are equal
    if a is not None and b is not None:
        return a == b
    return bool(left == right)


def _order(left: Any, right: Any) -> tuple[Any, Any] | None:
    a, b = as_number(left), as_number(right)
    if a is not None and b is not None:
        return a, b
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    return None


@dataclass(frozen=True)
class Condition:
    path: str
    op: str
    value: Any
    pattern: re.Pattern[str] | None = None

    def evaluate(self, lookup: Lookup) -> bool:
        found = lookup(self.path)
        if self.op == "exists":
            return (found is not MISSING and found is not None) == bool(self.value)
        if found is MISSING:
            return self.op in ("neq", "nin")
        op = self.op
        if op == "eq":
            return _equal(found, self.value)
        if op == "neq":
            return not _equal(found, self.value)
        if op == "in":
            return any(_equal(found, v) for v in self.value)
        if op == "nin":
            return not any(_equal(found, v) for v in self.value)
        if op == "contains":
            if isinstance(found, str):
                return isinstance(self.value, str) and self.value in found
            if isinstance(found, list):
                return any(_equal(item, self.value) for item in found)
            return False
        if op == "starts_with":
            return isinstance(found, str) and found.startswith(str(self.value))
        if op == "regex":
            assert self.pattern is not None
            return isinstance(found, str) and self.pattern.search(found) is not None
        pair = _order(found, self.value)
        if pair is None:
            return False
        a, b = pair
        return bool({"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op])


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Predicate, ...]

    def evaluate(self, lookup: Lookup) -> bool:
        return all(part.evaluate(lookup) for part in self.parts)


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Predicate, ...]

    def evaluate(self, lookup: Lookup) -> bool:
        return any(part.evaluate(lookup) for part in self.parts)


@dataclass(frozen=True)
class Not:
    part: Predicate

    def evaluate(self, lookup: Lookup) -> bool:
        return not self.part.evaluate(lookup)


Predicate = Condition | AllOf | AnyOf | Not


def _condition(path: Any, op: Any, value: Any, field: str) -> Condition:
    if not isinstance(path, str) or not path.strip():
        raise PredicateError(field, "a filter needs a path such as 'properties.amount'")
    if op not in OPS:
        raise PredicateError(
            field,
            f"unknown operator {op!r}; use one of {', '.join(OPS)}.{did_you_mean(str(op), OPS)}",
        )
    pattern = None
    if op in ("in", "nin"):
        if not isinstance(value, list):
            raise PredicateError(field, f"'{op}' needs a list of values")
    elif op == "regex":
        if not isinstance(value, str) or len(value) > 500:
            raise PredicateError(field, "'regex' needs a pattern (at most 500 characters)")
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise PredicateError(field, f"bad regex {value!r}: {exc}") from None
    elif op == "exists":
        value = True if value is None else value
        if not isinstance(value, bool):
            raise PredicateError(field, "'exists' takes true or false")
    elif isinstance(value, dict | list):
        raise PredicateError(field, f"'{op}' compares with one value, not {type(value).__name__}")
    return Condition(path.strip(), op, value, pattern)


def parse_where(spec: Any, field: str = "where") -> Predicate:
    """Compile a filter; :class:`PredicateError` names the field at fault."""
    if not isinstance(spec, dict) or not spec:
        raise PredicateError(field, "a filter is a mapping, e.g. {properties.amount: {gte: 20}}")
    keys = set(spec)
    if keys <= {"all", "any", "not"}:
        parts: list[Predicate] = []
        for key in ("all", "any"):
            if key in spec:
                items = spec[key]
                if not isinstance(items, list) or not items:
                    raise PredicateError(f"{field}.{key}", "needs a non-empty list of filters")
                inner = tuple(
                    parse_where(item, f"{field}.{key}[{i}]") for i, item in enumerate(items)
                )
                parts.append(AllOf(inner) if key == "all" else AnyOf(inner))
        if "not" in spec:
            parts.append(Not(parse_where(spec["not"], f"{field}.not")))
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
    if "path" in keys:
        unknown = keys - {"path", "op", "value"}
        if unknown:
            raise PredicateError(field, f"unknown key(s) {sorted(unknown)}; use path, op, value")
        return _condition(spec["path"], spec.get("op", "eq"), spec.get("value"), field)
    conditions: list[Predicate] = []
    for path, expected in spec.items():
        where = f"{field}.{path}"
        if isinstance(expected, dict):
            if not expected:
                raise PredicateError(where, "an empty operator mapping; write e.g. {gte: 20}")
            for op, value in expected.items():
                conditions.append(_condition(path, op, value, where))
        elif isinstance(expected, list):
            conditions.append(_condition(path, "in", expected, where))
        else:
            conditions.append(_condition(path, "eq", expected, where))
    return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))


def walk(root: dict[str, Any], path: str) -> Any:
    """``walk(event, "properties.card.last4")``; :data:`MISSING` when absent."""
    head, _, rest = path.partition(".")
    value = root.get(head, MISSING)
    if not rest:
        return value
    for part in rest.split("."):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value
