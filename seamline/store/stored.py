"""Which events of a group commit were newly stored, without per-row work in the common case.

``INSERT … ON CONFLICT DO NOTHING RETURNING`` names the rows it stored. Almost always that
is every row of the group (retries are rare), and building a Python set of 5,000 keys per
commit only to learn that cost ~10% of the ingest path's GIL time. :class:`StoredKeys`
answers ``key in stored`` for both cases: *every* row of the group, or the listed keys.

    >>> every = StoredKeys.every_row(3)
    >>> ("src", "m1") in every, len(every)
    (True, 3)
    >>> some = StoredKeys.listed({("src", "m1")})
    >>> ("src", "m1") in some, ("src", "m2") in some
    (True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

Key = tuple[str, str]


class StoredKeys:
    """The (source_id, message_id) pairs a group commit stored.

    ``every`` means every row handed to the insert was stored (no duplicates), so
    membership is only asked about keys of those rows and is always true.
    """

    __slots__ = ("count", "every", "keys")

    def __init__(self, every: bool, keys: set[Key], count: int):
        self.every = every
        self.keys = keys
        self.count = count

    @classmethod
    def every_row(cls, count: int) -> StoredKeys:
        return cls(True, set(), count)

    @classmethod
    def listed(cls, keys: Iterable[Key]) -> StoredKeys:
        found = set(keys)
        return cls(False, found, len(found))

    def __contains__(self, key: object) -> bool:
        return self.every or key in self.keys

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0
