"""Dashboard accounts: invites, argon2 passwords, TOTP two-factor, lockout, audit log.

API tokens stay for machines (and may still sign in to the dashboard); people get
accounts with a role: ``viewer`` sees every page, ``analyst`` may also run and save
the analysis forms, ``admin`` also manages sources, tokens, accounts and moments.
"""

from seamline.accounts.service import (
    ROLES,
    AccountsService,
    SignInResult,
    role_allows,
)

__all__ = ["ROLES", "AccountsService", "SignInResult", "role_allows"]
