"""Accounts: invite, enrol (password, TOTP, recovery codes), sign in, manage, audit.

- Passwords are hashed with argon2id (``argon2-cffi``'s defaults); an unknown email
  is checked against a dummy hash, so the answer takes as long as for a real one.
- TOTP (RFC 6238, 30 s steps, 6 digits, ``pyotp``) accepts the previous, current and
  next step; the step used is stored and only a later step is accepted next time, so
  a code cannot be replayed, not even within its window.
- Recovery codes (10, 80 random bits each) are stored as SHA-256 hashes and each
  works once.
- ``sign_in_max_failures`` failures in a row lock the account for
  ``sign_in_lockout_seconds``; the page says so in the same words for an email with
  no account. Every sign-in and every admin action is written to the audit log.

Example::

    ws.accounts.invite("ana@example.com", "analyst", actor="cli")["link"]
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from seamline.accounts.throttle import FailureWindow
from seamline.errors import BadRequest, Conflict, NotFound, did_you_mean
from seamline.events.timestamps import utcnow
from seamline.settings import Settings
from seamline.store import Store, Writer
from seamline.store import accounts as tables
from seamline.store.accounts import AccountRow

T = TypeVar("T")
Connection = Any  # the writer's DuckDB connection (only store/ imports duckdb)
ROLES = ("viewer", "analyst", "admin")
_RANK = {"viewer": 0, "read": 1, "analyst": 1, "admin": 2}  # token scopes rank like roles
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ISSUER = "Seamline"
RECOVERY_CODES = 10
INVITE_PATH = "/invite/"
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


def role_allows(role: str, needed: str) -> bool:
    """Whether ``role`` (an account role or a token scope) may do what ``needed`` may."""
    return _RANK.get(role, -1) >= _RANK[needed]


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def normalise_recovery(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))  # ~79 bits
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class SignInResult:
    """``account`` when signed in; otherwise the page's ``message`` and HTTP ``status``."""

    account: AccountRow | None
    message: str | None = None
    status: int = 200
    retry_after: int | None = None


@dataclass(frozen=True)
class Enrolment:
    """What the TOTP enrolment page shows: the secret and its otpauth:// URI."""

    email: str
    secret: str
    uri: str


class AccountsService:
    def __init__(self, store: Store, writer: Writer, settings: Settings):
        self.store = store
        self.writer = writer
        self.settings = settings
        self.hasher = PasswordHasher()
        self._dummy_hash: str | None = None
        self._throttle_noted: dict[str, float] = {}
        #: bumped by every change that may end or alter sessions (disable, role, token revoke):
        #: dashboard sessions re-check themselves against the store when it moves
        self.generation = 0
        self.unknown_emails = FailureWindow(settings.sign_in_max_failures,
                                            settings.sign_in_lockout_seconds)  # fmt: skip
        self.addresses = FailureWindow(settings.sign_in_ip_max_failures,
                                       settings.sign_in_ip_window_seconds)  # fmt: skip

    def _write(self, fn: Callable[[Connection], T]) -> T:
        # accounts and the audit log are never analysed: cached results stay valid
        return self.writer.call(fn, changes_data=False).result()

    def changed(self) -> None:
        """Sessions must be checked again (an account or token changed)."""
        self.generation += 1

    def record(self, actor: str, action: str, subject: str | None = None,
               ip: str | None = None, detail: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Append one entry to the audit log."""
        now = utcnow()
        self._write(lambda con: tables.record(con, now, actor, action, subject, ip, detail))

    # -- admin actions -----------------------------------------------------------------
    def invite(self, email: str, role: str, *, name: str | None = None, actor: str,
               ip: str | None = None, base_url: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Invite ``email`` as ``role``: returns the one-time link (shown only here)."""
        email = normalise_email(email)
        if not EMAIL.match(email):
            raise BadRequest(f"'{email}' is not an email address; write it as name@example.com.",
                             code="invalid_email")  # fmt: skip
        role = self._check_role(role)
        existing = tables.by_email(self.store, email)
        if existing is not None and existing.status == "active":
            raise Conflict(f"{email} already has an active account; change its role with "
                           f"`seamline accounts role {email} ROLE` or disable it first.",
                           code="account_exists")  # fmt: skip
        token = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + timedelta(hours=self.settings.invite_expiry_hours)
        clean_name = (name or "").strip() or None

        def run(con: Connection) -> None:
            tables.upsert_invite(con, email, role, clean_name, _sha256(token), expires,
                                 actor, now)  # fmt: skip
            tables.record(con, now, actor, "account.invite", email, ip, {"role": role})

        self._write(run)
        path = INVITE_PATH + token
        base = (base_url or self.default_base_url()).rstrip("/")
        return {"email": email, "role": role, "name": clean_name, "link": base + path,
                "path": path, "expires_at": expires.isoformat()}  # fmt: skip

    def default_base_url(self) -> str:
        """Where invite links point when no request says: the public host, else local."""
        if self.settings.public_host:
            return f"{self.settings.public_protocol or 'https'}://{self.settings.public_host}"
        return "http://127.0.0.1:8088"

    def _check_role(self, role: str) -> str:
        role = role.strip().lower()
        if role not in ROLES:
            raise BadRequest(f"Unknown role '{role}'; use viewer, analyst or admin."
                             f"{did_you_mean(role, ROLES)}", code="invalid_role")  # fmt: skip
        return role

    def _account(self, email: str) -> AccountRow:
        account = tables.by_email(self.store, normalise_email(email))
        if account is None:
            raise NotFound(f"No account has the email '{email}'; see `seamline accounts list`.",
                           code="unknown_account")  # fmt: skip
        return account

    def set_role(self, email: str, role: str, *, actor: str,
                 ip: str | None = None) -> dict[str, Any]:  # fmt: skip
        account, role, now = self._account(email), self._check_role(role), utcnow()
        if account.email == actor and role != "admin" and account.role == "admin":
            raise BadRequest("You cannot take the admin role from yourself; ask another admin.",
                             code="own_account")  # fmt: skip

        def run(con: Connection) -> None:
            tables.set_role(con, account.email, role)
            tables.record(con, now, actor, "account.role", account.email, ip,
                          {"from": account.role, "to": role})  # fmt: skip

        self._write(run)
        self.changed()
        return {"email": account.email, "role": role, "previous_role": account.role}

    def disable(self, email: str, *, actor: str, ip: str | None = None) -> dict[str, Any]:
        """Disable an account: its sessions end at their next request."""
        account, now = self._account(email), utcnow()
        if account.email == actor:
            raise BadRequest("You cannot disable your own account; ask another admin.",
                             code="own_account")  # fmt: skip

        def run(con: Connection) -> None:
            tables.disable(con, account.email, now)
            tables.record(con, now, actor, "account.disable", account.email, ip)

        self._write(run)
        self.changed()
        return {"email": account.email, "status": "disabled"}

    def describe(self) -> list[dict[str, Any]]:
        now = utcnow()
        return [row.to_dict(now) for row in tables.every(self.store)]

    def audit(self, limit: int = 200, action: str | None = None) -> list[dict[str, Any]]:
        """The audit log, newest first (``action`` filters by prefix, e.g. ``sign_in``)."""
        return tables.audit(self.store, max(1, min(limit, 10_000)), action)

    # -- enrolment ------------------------------------------------------------------
    def invitation(self, token: str) -> AccountRow:
        """The account a live invite link belongs to; NotFound when unknown, used or expired."""
        account = tables.by_invite(self.store, _sha256(token)) if token else None
        if (account is None or account.disabled_at is not None
                or account.invite_expires_at is None or account.invite_expires_at < utcnow()):
            raise NotFound("This invite link is unknown, already used or expired; ask an admin "
                           "for a new one (`seamline accounts invite EMAIL --role viewer`).",
                           code="invalid_invite")  # fmt: skip
        return account

    def set_password(self, token: str, password: str, confirm: str) -> Enrolment:
        """Step 1 of an invite: the password. Returns the TOTP secret to enrol."""
        account = self.invitation(token)
        minimum = self.settings.password_min_length
        if len(password) < minimum:
            raise BadRequest(f"The password needs at least {minimum} characters; a few "
                             "unrelated words make a long one that is easy to remember.",
                             code="password_too_short")  # fmt: skip
        if not hmac.compare_digest(password.encode(), confirm.encode()):
            raise BadRequest("The two passwords differ; type the same password twice.",
                             code="password_mismatch")  # fmt: skip
        if password.strip().lower() == account.email:
            raise BadRequest("The password must not be your email address.",
                             code="password_is_email")  # fmt: skip
        secret = pyotp.random_base32()
        hashed = self.hasher.hash(password)
        self._write(lambda con: tables.set_password(con, account.account_id, hashed, secret))
        return self._enrolment(account.email, secret)

    def enrolment(self, token: str) -> Enrolment | None:
        """The pending TOTP enrolment of an invite whose password is set, else None."""
        account = self.invitation(token)
        if account.password_hash is None or account.totp_secret is None:
            return None
        return self._enrolment(account.email, account.totp_secret)

    @staticmethod
    def _enrolment(email: str, secret: str) -> Enrolment:
        uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)
        return Enrolment(email, secret, uri)

    def confirm_totp(self, token: str, code: str, ip: str | None = None) -> list[str]:
        """Step 2: a valid code proves the authenticator works. Returns the recovery codes."""
        account = self.invitation(token)
        if account.password_hash is None or account.totp_secret is None:
            raise BadRequest("Set a password first.", code="password_missing")
        step = totp_step(account.totp_secret, code)
        if step is None:
            raise BadRequest("That code does not match. Check the device's clock and type the "
                             "6-digit code your app shows now.", code="invalid_code")  # fmt: skip
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        hashes = [_sha256(normalise_recovery(code)) for code in codes]
        now = utcnow()

        def run(con: Connection) -> None:
            tables.activate(con, account.account_id, step, hashes, now)
            tables.record(con, now, account.email, "account.activate", account.email, ip,
                          {"role": account.role})  # fmt: skip

        self._write(run)
        return codes

    # -- sign-in ----------------------------------------------------------------------
    def address_retry_after(self, ip: str | None) -> int:
        return self.addresses.retry_after(ip or "?")

    def note_throttled(self, ip: str | None, subject: str | None = None) -> None:
        """Audit a throttled address once per window, not once per request (no write flood)."""
        key, now = ip or "?", time.monotonic()
        if now - self._throttle_noted.get(key, -1e12) < self.settings.sign_in_ip_window_seconds:
            return
        self._throttle_noted[key] = now
        if len(self._throttle_noted) > 10_000:
            self._throttle_noted.clear()
        self.record(subject or "?", "sign_in.throttled", subject or None, ip)

    def sign_in(self, email: str, password: str, code: str,
                ip: str | None = None) -> SignInResult:  # fmt: skip
        """Check email, password and a TOTP or recovery code; count and audit the result."""
        email = normalise_email(email)
        wait = self.address_retry_after(ip)
        if wait:
            self.note_throttled(ip, email)
            return self._throttled(wait)
        account = tables.by_email(self.store, email) if email else None
        now = utcnow()
        usable = account is not None and account.status == "active"
        if account is not None and account.locked_until is not None and account.locked_until > now:
            self.record(email, "sign_in.locked", email, ip, {"reason": "account locked"})
            self.addresses.fail(ip or "?")
            return self._locked()
        if not usable and self.unknown_emails.retry_after(email):
            self.record(email or "?", "sign_in.locked", email or None, ip,
                        {"reason": "no usable account"})  # fmt: skip
            self.addresses.fail(ip or "?")
            return self._locked()
        password_ok = self._password_ok(account.password_hash if usable and account else None,
                                        password)  # fmt: skip
        if not usable or account is None or not password_ok:
            return self._failed(account if usable else None, email, ip, "password" if usable
                                else "no usable account")  # fmt: skip
        return self._second_factor(account, code, ip)

    def _password_ok(self, hashed: str | None, password: str) -> bool:
        if hashed is None:  # same work as a real check: timing says nothing about the email
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
            hashed = self._dummy_hash
            password = password + "\x00"  # never matches the dummy
        try:
            return self.hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def _second_factor(self, account: AccountRow, code: str, ip: str | None) -> SignInResult:
        code = code.strip().replace(" ", "")
        now = utcnow()
        if re.fullmatch(r"\d{6}", code):
            step = totp_step(account.totp_secret or "", code)
            if step is None:
                return self._failed(account, account.email, ip, "wrong code")

            def claim(con: Connection) -> bool:
                if not tables.claim_step(con, account.account_id, step):
                    return False
                tables.signed_in(con, account.account_id, now)
                tables.record(con, now, account.email, "sign_in.ok", account.email, ip,
                              {"factor": "totp"})  # fmt: skip
                return True

            if not self._write(claim):
                return self._failed(account, account.email, ip, "replayed code")
        elif code:
            hashed = _sha256(normalise_recovery(code))

            def spend(con: Connection) -> bool:
                if not tables.claim_recovery_code(con, account.account_id, hashed, now):
                    return False
                tables.signed_in(con, account.account_id, now)
                tables.record(con, now, account.email, "sign_in.ok", account.email, ip,
                              {"factor": "recovery code"})  # fmt: skip
                return True

            if not self._write(spend):
                return self._failed(account, account.email, ip, "wrong or used recovery code")
        else:
            return self._failed(account, account.email, ip, "no code")
        self.unknown_emails.clear(account.email)
        return SignInResult(account)

    def _failed(self, account: AccountRow | None, email: str, ip: str | None,
                reason: str) -> SignInResult:  # fmt: skip
        self.addresses.fail(ip or "?")
        now = utcnow()
        if account is None:
            locked = self.unknown_emails.fail(email) >= self.settings.sign_in_max_failures
            self.record(email or "?", "sign_in.failed", email or None, ip,
                        {"reason": reason, "locked": locked})  # fmt: skip
        else:
            until = now + timedelta(seconds=self.settings.sign_in_lockout_seconds)

            def run(con: Connection) -> bool:
                did_lock = tables.failed(con, account.account_id,
                                         self.settings.sign_in_max_failures, until)  # fmt: skip
                tables.record(con, now, email, "sign_in.failed", email, ip,
                              {"reason": reason, "locked": did_lock})  # fmt: skip
                return did_lock

            locked = self._write(run)
        if locked:
            return self._locked()
        return SignInResult(None, "Wrong email, password or code. Codes change every 30 "
                                  "seconds, and each one works once.", 401)  # fmt: skip

    def _locked(self) -> SignInResult:
        minutes = max(1, round(self.settings.sign_in_lockout_seconds / 60))
        return SignInResult(None, f"Too many failed sign-ins: this account is locked for up "
                                  f"to {minutes} minute{'s' if minutes != 1 else ''}. Try again "
                                  "later, or ask an admin.", 429,
                            self.settings.sign_in_lockout_seconds)  # fmt: skip

    @staticmethod
    def _throttled(wait: int) -> SignInResult:
        return SignInResult(None, f"Too many failed sign-ins from this address; try again in "
                                  f"{max(1, round(wait / 60))} minute(s).", 429, wait)  # fmt: skip

    def session_account(self, account_id: str) -> AccountRow | None:
        """The account behind a session while it may still be used (not disabled)."""
        account = tables.by_id(self.store, account_id)
        return account if account is not None and account.status == "active" else None


def totp_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step (previous, current or next) whose code is ``code``, or None."""
    code = code.strip().replace(" ", "")
    if not secret or not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if at is None else at) // totp.interval)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
