"""Identity on the write path: stitch each group of events inside the writer's transaction.

:class:`IdentityService` is owned by the writer thread. It loads the graph once,
stitches every group before the append (so ``events.person_id`` is written with the
event and analyses see persons at once), persists the graph's changes in the same
transaction, and drops events of suppressed (forgotten) identifiers at the door.
If a transaction fails, :meth:`reload` restores the in-memory graph from the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb

from seamline.errors import NotFound
from seamline.events import EventRows
from seamline.events.timestamps import from_micros
from seamline.identity.identifiers import ID_TYPES, IdentityRules, normalise
from seamline.identity.stitcher import Changes, Key, Stitcher
from seamline.store import identity as tables


def candidate_keys(value: str, rules: IdentityRules) -> list[Key]:
    """Every (type, normalised value) an identifier typed by a person could be."""
    keys = []
    for id_type in ID_TYPES:
        normalised = normalise(id_type, value, rules)
        if normalised is not None and (id_type != "phone" or any(c.isdigit() for c in value)):
            keys.append((id_type, normalised))
    return keys


class IdentityService:
    def __init__(self, rules: IdentityRules | None = None):
        self.rules = rules or IdentityRules()
        self.stitcher = Stitcher(self.rules)
        self.suppressed: set[str] = set()
        self._cache: dict[tuple[str, Any], str | None] = {}

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        state, suppressed = tables.load_state(con)
        self.stitcher = Stitcher(self.rules, state)
        self.suppressed = suppressed

    def _normalised(self, id_type: str, raw: Any) -> str | None:
        # Most events repeat identifiers already seen: cache their canonical form.
        cache_key = (id_type, raw)
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        except TypeError:  # unhashable: normalise rejects it anyway
            return None
        if len(self._cache) > 200_000:
            self._cache.clear()
        value = self._cache[cache_key] = normalise(id_type, raw, self.rules)
        return value

    def identifiers(
        self,
        user_id: Any = None,
        anonymous_id: Any = None,
        device_id: Any = None,
        email: Any = None,
        phone: Any = None,
        previous_id: Any = None,
        kind: str | None = None,
    ) -> list[Key]:
        """An event's identifiers, normalised; placeholders dropped; its own user id first.

        ``previous_id`` of an alias is a user id when already known as one, otherwise an
        anonymous id (what analytics.js and the mobile SDKs send).
        """
        keys: list[Key] = []
        candidates: tuple[tuple[str, Any], ...] = (
            ("user_id", user_id), ("anonymous_id", anonymous_id), ("device_id", device_id),
            ("email", email), ("phone", phone),
        )  # fmt: skip
        for id_type, raw in candidates:
            if raw is not None:
                value = self._normalised(id_type, raw)
                if value is not None:
                    keys.append((id_type, value))
        if previous_id is not None and kind == "alias":
            id_type = (
                "user_id" if ("user_id", previous_id) in self.stitcher.state.person_of
                else "anonymous_id"
            )  # fmt: skip
            value = self._normalised(id_type, previous_id)
            if value is not None:
                keys.append((id_type, value))
        return keys

    def prepare(self, rows: EventRows
                ) -> tuple[EventRows, set[tuple[str, str]], Changes]:  # fmt: skip
        """Assign ``person_id`` to every row, in memory: the kept rows, the suppressed keys
        and the graph's changes, which the caller persists in the rows' transaction
        (:func:`seamline.store.identity.persist`).

        Also replaces the rows' raw ``contact_email`` / ``contact_phone`` by the normalised
        identifiers (what the store keeps, see :mod:`seamline.store.contacts`).
        """
        columns = rows.columns
        dropped = self.assign(rows)
        changes = self.stitcher.take_changes()
        if not dropped:
            return rows, set(), changes
        message_ids = columns["message_id"]
        suppressed = {(columns["source_id"][i], message_ids[i]) for i in dropped}
        gone = set(dropped)
        kept = EventRows()
        for name, column in columns.items():
            kept.columns[name] = [v for i, v in enumerate(column) if i not in gone]
        return kept, suppressed, changes

    def assign(self, rows: EventRows) -> list[int]:
        """Fill ``person_id`` (and the normalised contacts) in place, in memory; returns the
        indexes of suppressed rows. The graph's changes wait in ``stitcher.changes``."""
        columns = rows.columns
        inputs = zip(
            columns["user_id"], columns["anonymous_id"], columns["device_id"],
            columns["contact_email"], columns["contact_phone"], columns["previous_id"],
            columns["type"], strict=True,
        )  # fmt: skip
        persons = columns["person_id"]
        emails, phones = columns["contact_email"], columns["contact_phone"]
        timestamps, message_ids = columns["timestamp"], columns["message_id"]
        resolve = self.stitcher.resolve
        changes = self.stitcher.changes
        dropped: list[int] = []
        # Events of a group mostly repeat a few identifier sets (one per user in a batch). A
        # set that resolved without changing the graph resolves to the same person again
        # until a merge or a new hub moves its identifiers: remember those answers, and
        # forget them all when that happens. Contacts (normalised per row) and aliases (whose
        # previousId's type depends on the graph) always take the full path.
        known: dict[tuple[Any, ...], str] = {}
        for index, values in enumerate(inputs):
            plain = values[3] is None and values[4] is None and values[5] is None
            if plain:
                try:
                    person = known.get(values)
                except TypeError:  # an id that is a list or an object: never remembered
                    person, plain = None, False
                if person is not None:
                    persons[index] = person
                    continue
            keys = self.identifiers(*values)
            if values[3] is not None or values[4] is not None:  # store the normalised form
                email = phone = None
                for id_type, value in keys:
                    if id_type == "email":
                        email = value
                    elif id_type == "phone":
                        phone = value
                emails[index], phones[index] = email, phone
            if self.suppressed and any(
                tables.suppression_hash(key) in self.suppressed for key in keys
            ):
                dropped.append(index)
                continue
            size, moves = len(changes), changes.moves
            person = persons[index] = resolve(keys, from_micros(timestamps[index]),
                                              message_ids[index])  # fmt: skip
            if changes.moves != moves:
                known.clear()
            elif person is not None and plain and len(changes) == size:
                known[values] = person  # it changed nothing: the same answer next time
        return dropped

    def forget(self, con: duckdb.DuckDBPyConnection, identifier: str, at: datetime
               ) -> dict[str, Any]:  # fmt: skip
        """Delete the person an identifier belongs to and suppress all its identifiers."""
        state = self.stitcher.state
        key = next((k for k in candidate_keys(identifier, self.rules) if k in state.person_of),
                   None)  # fmt: skip
        if key is None:
            raise NotFound(
                f"No person has the identifier '{identifier}'. Try `seamline person "
                f"{identifier}` to see how it is stored.",
                code="unknown_identifier",
            )
        person = state.person_of[key]
        keys = list(state.members.get(person, [key]))
        summary = tables.forget(con, person, keys, at)
        for member in keys:
            state.person_of.pop(member, None)
            state.first_seen.pop(member, None)
            self.suppressed.add(tables.suppression_hash(member))
        state.members.pop(person, None)
        return {"person_id": person, "deleted": summary,
                "suppressed": [f"{t}:{v}" for t, v in keys]}  # fmt: skip
