"""Identifier kinds, normalisation and the placeholder blocklist.

Each identifier type has a *kind*:
- ``person`` keys (``user_id``): two different values never share a person;
- ``contact`` keys (``email``, ``phone``): link devices to accounts, capped per person,
  and a phone seen with several user ids becomes *shared* (a hub) and links nobody;
- ``device`` keys (``anonymous_id``, ``device_id``): may be shared; a device seen with
  several user ids becomes a hub too.

Values are normalised (emails trimmed and lower-cased, phones to E.164 with
``phonenumbers``) and placeholder values (``undefined``, ``null``, all-zero ids, ...)
never become identifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import phonenumbers

#: Identifier types in priority order: the first present on an event decides its person.
ID_TYPES: tuple[str, ...] = ("user_id", "email", "phone", "device_id", "anonymous_id")

KINDS: dict[str, str] = {
    "user_id": "person",
    "email": "contact",
    "phone": "contact",
    "device_id": "device",
    "anonymous_id": "device",
}

_BLOCKED = frozenset(
    {
        "", "null", "none", "nil", "nan", "undefined", "anonymous", "guest", "-1", "0",
        "[object object]", "true", "false", "id", "email", "distinct_id", "not_authenticated",
        "unknown", "n/a", "user", "test",
    }
)  # fmt: skip
_ZEROS = re.compile(r"[0\-]*")


@dataclass(frozen=True)
class IdentityRules:
    """Guardrail configuration (see the README's identity section)."""

    default_region: str = "US"
    #: most values of a type one person may hold; ``anonymous_id`` counts per 7 days
    caps: dict[str, int] = field(
        default_factory=lambda: {
            "user_id": 1, "email": 5, "phone": 3, "device_id": 10, "anonymous_id": 50,
        }
    )  # fmt: skip
    max_component: int = 200
    blocked_values: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, region: str, caps: str, max_component: int, blocked: str
                      ) -> IdentityRules:  # fmt: skip
        """Build rules from the settings' text forms, e.g. ``caps="email=3,anonymous_id=20"``."""
        merged = dict(cls().caps)
        for part in filter(None, (p.strip() for p in caps.split(","))):
            name, _, number = part.partition("=")
            if name.strip() not in KINDS or not number.strip().isdigit():
                raise ValueError(
                    f"identity_caps entry {part!r} should look like 'email=5' with a type "
                    f"among {', '.join(ID_TYPES)}"
                )
            merged[name.strip()] = int(number)
        values = frozenset(v.strip().lower() for v in blocked.split(",") if v.strip())
        return cls(default_region=region.upper(), caps=merged, max_component=max_component,
                   blocked_values=values)  # fmt: skip

    def blocked_list(self) -> list[str]:
        """Every blocked value, folded (for the batch rebuild's SQL)."""
        return sorted(_BLOCKED | self.blocked_values)

    def is_blocked(self, value: str) -> bool:
        folded = value.strip().strip("\"'").lower()
        return folded in _BLOCKED or folded in self.blocked_values or bool(_ZEROS.fullmatch(folded))


def normalise(id_type: str, value: object, rules: IdentityRules) -> str | None:
    """The canonical value of an identifier, or None if it is absent, invalid or blocked.

    >>> normalise("email", "  Ana@Example.COM ", IdentityRules())
    'ana@example.com'
    >>> normalise("phone", "(415) 555-2671", IdentityRules())
    '+14155552671'
    >>> normalise("anonymous_id", "undefined", IdentityRules()) is None
    True
    """
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if not text or rules.is_blocked(text):
        return None
    if id_type == "email":
        text = text.lower()
        if "@" not in text or text.startswith("@") or text.endswith("@"):
            return None
    elif id_type == "phone":
        try:
            number = phonenumbers.parse(text, rules.default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return text
