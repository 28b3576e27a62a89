"""Incremental identity stitching: a constrained union-find kept in memory.

The writer thread owns one :class:`Stitcher`. For every event it takes the event's
identifiers (strongest first, see :data:`ID_TYPES`) and returns the event's person,
linking new identifiers and merging persons where the guardrails allow:

1. hubs link nobody: a device, anonymous id or phone already seen with two user ids;
2. an identifier whose person holds a *different* user id than the event's is refused
   (``different_user_id``); if it is a device or contact key it becomes a hub;
3. two persons merge only if the result keeps at most one user id, stays within every
   per-type cap and within ``max_component`` identifiers (else ``component_too_large``,
   quarantined); the older person wins, so person ids stay stable;
4. a new identifier joins the person unless that breaks its type's cap
   (``cap_exceeded``; ``anonymous_id`` counts the last 7 days).

Every refusal, merge and hub is returned in :class:`Changes` and written, with the
events, in the same transaction. History is not rewritten at merge time: the loser's
person id maps to the winner through ``person_overrides`` (flat), joined at query time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from seamline.identity.identifiers import ID_TYPES, KINDS, IdentityRules

Key = tuple[str, str]  # (id_type, value)
_NAMESPACE = uuid.UUID("6f1c9a2e-5b7d-4c8e-9a40-2d8f3e1b7c55")
_WEEK = timedelta(days=7)
_PRIORITY = {id_type: rank for rank, id_type in enumerate(ID_TYPES)}


def person_id_for(key: Key) -> str:
    """Deterministic person id seeded by an identifier (the same seed, the same id)."""
    return str(uuid.uuid5(_NAMESPACE, f"{key[0]}:{key[1]}"))


@dataclass
class Changes:
    """What one group of events did to the identity graph; persisted with the events."""

    persons: list[tuple[str, int, datetime, str, str]] = field(default_factory=list)
    identities: list[tuple[str, str, str, datetime, str | None, str | None]] = field(
        default_factory=list
    )  # (type, value, person, first_seen, message_id, linked_via "type:value")
    merges: list[tuple[datetime, str, str, str | None, str]] = field(default_factory=list)
    refusals: list[tuple[datetime, str | None, str, str, str | None, str, str]] = field(
        default_factory=list
    )  # (at, message_id, type, value, person, reason, detail)
    hubs: list[tuple[str, str, datetime, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.persons) + len(self.identities) + len(self.merges) + len(self.refusals)
                + len(self.hubs))  # fmt: skip

    @property
    def moves(self) -> int:
        """Merges and new hubs: the changes that move identifiers already known."""
        return len(self.merges) + len(self.hubs)


@dataclass
class IdentityState:
    """The graph as loaded from the store; the stitcher mutates it in place."""

    person_of: dict[Key, str] = field(default_factory=dict)
    members: dict[str, list[Key]] = field(default_factory=dict)
    first_seen: dict[Key, datetime] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)
    hubs: set[Key] = field(default_factory=set)
    next_seq: int = 1


class Stitcher:
    def __init__(self, rules: IdentityRules, state: IdentityState | None = None):
        self.rules = rules
        self.state = state or IdentityState()
        self.changes = Changes()

    def take_changes(self) -> Changes:
        changes, self.changes = self.changes, Changes()
        return changes

    # -- helpers -----------------------------------------------------------------------
    def _user_ids(self, person: str) -> set[str]:
        return {v for t, v in self.state.members.get(person, ()) if t == "user_id"}

    def _count(self, person: str, id_type: str, at: datetime) -> int:
        keys = [k for k in self.state.members.get(person, ()) if k[0] == id_type]
        if id_type == "anonymous_id":
            return sum(1 for k in keys if at - self.state.first_seen.get(k, at) < _WEEK)
        return len(keys)

    def _create(self, seed: Key, at: datetime) -> str:
        person = person_id_for(seed)
        state = self.state
        if person not in state.seq:
            state.seq[person] = state.next_seq
            state.next_seq += 1
            state.members.setdefault(person, [])
            self.changes.persons.append((person, state.seq[person], at, seed[0], seed[1]))
        return person

    def _link(self, key: Key, person: str, at: datetime, message_id: str | None,
              via: Key | None) -> None:  # fmt: skip
        state = self.state
        state.person_of[key] = person
        state.members.setdefault(person, []).append(key)
        state.first_seen[key] = at
        self.changes.identities.append(
            (key[0], key[1], person, at, message_id, f"{via[0]}:{via[1]}" if via else None)
        )

    def _refuse(self, key: Key, person: str | None, reason: str, detail: str, at: datetime,
                message_id: str | None) -> None:  # fmt: skip
        self.changes.refusals.append((at, message_id, key[0], key[1], person, reason, detail))

    def _make_hub(self, key: Key, at: datetime, detail: str) -> None:
        if key not in self.state.hubs:
            self.state.hubs.add(key)
            self.changes.hubs.append((key[0], key[1], at, detail))

    def _merge_problem(self, a: str, b: str, at: datetime) -> str | None:
        users = self._user_ids(a) | self._user_ids(b)
        if len(users) > self.rules.caps.get("user_id", 1):
            return "two_user_ids"
        size = len(self.state.members.get(a, ())) + len(self.state.members.get(b, ()))
        if size > self.rules.max_component:
            return "component_too_large"
        for id_type, cap in self.rules.caps.items():
            if id_type != "user_id" and self._count(a, id_type, at) + self._count(
                b, id_type, at
            ) > cap:
                return "cap_exceeded"
        return None

    def _merge(self, a: str, b: str, at: datetime, message_id: str | None, via: Key) -> str:
        state = self.state
        winner, loser = (a, b) if state.seq.get(a, 0) <= state.seq.get(b, 0) else (b, a)
        for key in state.members.pop(loser, []):
            state.person_of[key] = winner
            state.members[winner].append(key)
        self.changes.merges.append((at, loser, winner, message_id, f"{via[0]}:{via[1]}"))
        return winner

    # -- the algorithm -------------------------------------------------------------------
    def resolve(self, keys: Iterable[Key], at: datetime, message_id: str | None = None
                ) -> str | None:  # fmt: skip
        """Link one event's identifiers; returns its person id (None if it has none).

        The first ``user_id`` in ``keys`` is the event's own (an alias may carry two).
        """
        keys = list(keys)
        state = self.state
        # Fast path, most events: every identifier already known, one person, none shared.
        persons = {state.person_of.get(k) for k in keys}
        if len(persons) == 1 and None not in persons and state.hubs.isdisjoint(keys):
            return persons.pop()
        event_uid = next((v for t, v in keys if t == "user_id"), None)
        ids = sorted(set(keys), key=lambda k: (_PRIORITY[k[0]], k[1]))
        if not ids:
            return None
        anchor = next(k for k in ids if k[0] != "user_id" or k[1] == event_uid)
        live = [k for k in ids if k not in state.hubs]
        # 2. identifiers that belong to another user's person
        if event_uid is not None:
            kept = []
            for key in live:
                person = state.person_of.get(key)
                users = self._user_ids(person) if person else set()
                if person and users and event_uid not in users:
                    self._refuse(key, person, "different_user_id",
                                 f"belongs to user {sorted(users)[0]}, event is user {event_uid}",
                                 at, message_id)  # fmt: skip
                    if KINDS[key[0]] != "person":
                        self._make_hub(key, at, f"seen with user ids {sorted(users)[0]} and "
                                                f"{event_uid}")  # fmt: skip
                    continue
                kept.append(key)
            live = kept
        if not live:  # only shared identifiers: a person of the shared device itself, no guess
            return self._create(("shared_" + anchor[0], anchor[1]), at)
        # 3. merge the persons the remaining identifiers point at
        target: str | None = None
        for key in live:
            person = state.person_of.get(key)
            if person is None or person == target:
                continue
            if target is None:
                target = person
                continue
            problem = self._merge_problem(target, person, at)
            if problem is None:
                target = self._merge(target, person, at, message_id, key)
            else:
                self._refuse(key, person, problem, f"would merge {person} into {target}", at,
                             message_id)  # fmt: skip
                if problem == "two_user_ids" and KINDS[key[0]] != "person":
                    self._make_hub(key, at, "links two identified persons")
        # 4. attach the new identifiers
        new = [k for k in live if k not in state.person_of]
        if target is None:
            seed = next((k for k in new if KINDS[k[0]] == "device"), new[0])
            target = self._create(seed, at)
        for key in new:
            cap = self.rules.caps.get(key[0])
            if cap is not None and self._count(target, key[0], at) >= cap:
                self._refuse(key, target, "cap_exceeded",
                             f"person already has {cap} {key[0]} values", at,
                             message_id)  # fmt: skip
                continue
            if len(state.members.get(target, ())) >= self.rules.max_component:
                self._refuse(key, target, "component_too_large",
                             f"person has {self.rules.max_component} identifiers", at,
                             message_id)  # fmt: skip
                continue
            self._link(key, target, at, message_id, anchor if key != anchor else None)
        return target
