"""Identity: turn identifiers (user ids, anonymous and device ids, email, phone) into persons."""

from seamline.identity.identifiers import ID_TYPES, KINDS, IdentityRules, normalise
from seamline.identity.stitcher import Changes, IdentityState, Stitcher, person_id_for

__all__ = [
    "ID_TYPES",
    "KINDS",
    "Changes",
    "IdentityRules",
    "IdentityState",
    "Stitcher",
    "normalise",
    "person_id_for",
]
