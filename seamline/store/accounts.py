"""Tables of dashboard accounts, their recovery codes and the audit log.

Writes run on the writer's connection inside its transaction (``Writer.call``), as the
tokens do; reads use the store's own cursors. Secrets are never stored in the clear:
passwords as argon2 hashes (made by :mod:`seamline.accounts`), invite tokens and
recovery codes as SHA-256 hashes (random, high-entropy values: a fast hash suffices).
The TOTP secret has to be kept readable to check codes; it never leaves the server
after enrolment.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:  # migrations import this module before database.py is loaded
    from seamline.store.database import Store

MIGRATION = """
CREATE TABLE accounts (
    account_id VARCHAR PRIMARY KEY,
    email VARCHAR NOT NULL UNIQUE,
    name VARCHAR,
    role VARCHAR NOT NULL,
    password_hash VARCHAR,
    totp_secret VARCHAR,
    totp_confirmed BOOLEAN NOT NULL DEFAULT FALSE,
    totp_last_step BIGINT,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMP,
    invite_hash VARCHAR,
    invite_expires_at TIMESTAMP,
    invited_by VARCHAR,
    created_at TIMESTAMP NOT NULL,
    invited_at TIMESTAMP,
    activated_at TIMESTAMP,
    disabled_at TIMESTAMP,
    last_sign_in_at TIMESTAMP
);
CREATE TABLE account_recovery_codes (
    account_id VARCHAR NOT NULL,
    code_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    PRIMARY KEY (account_id, code_hash)
);
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    occurred_at TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    subject VARCHAR,
    ip VARCHAR,
    detail JSON
);
"""

_COLUMNS = ("account_id", "email", "name", "role", "password_hash", "totp_secret",
            "totp_confirmed", "totp_last_step", "failed_attempts", "locked_until",
            "invite_hash", "invite_expires_at", "invited_by", "created_at", "invited_at",
            "activated_at", "disabled_at", "last_sign_in_at")  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM accounts"


@dataclass(frozen=True)
class AccountRow:
    account_id: str
    email: str
    name: str | None
    role: str
    password_hash: str | None
    totp_secret: str | None
    totp_confirmed: bool
    totp_last_step: int | None
    failed_attempts: int
    locked_until: datetime | None
    invite_hash: str | None
    invite_expires_at: datetime | None
    invited_by: str | None
    created_at: datetime
    invited_at: datetime | None
    activated_at: datetime | None
    disabled_at: datetime | None
    last_sign_in_at: datetime | None

    @property
    def status(self) -> str:
        if self.disabled_at is not None:
            return "disabled"
        if self.activated_at is None:
            return "invited"
        return "active"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """The public view: never a hash or a secret."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        locked = self.locked_until is not None and self.locked_until > now
        return {"email": self.email, "name": self.name, "role": self.role,
                "status": self.status, "locked_until": iso(self.locked_until) if locked else None,
                "created_at": iso(self.created_at), "invited_by": self.invited_by,
                "activated_at": iso(self.activated_at), "disabled_at": iso(self.disabled_at),
                "last_sign_in_at": iso(self.last_sign_in_at)}  # fmt: skip


def _row(row: tuple[Any, ...] | None) -> AccountRow | None:
    return AccountRow(*row) if row else None


# -- reads ---------------------------------------------------------------------------
def by_email(store: Store, email: str) -> AccountRow | None:
    return _row(store.query_one(f"{_SELECT} WHERE email = ?", [email]))


def by_id(store: Store, account_id: str) -> AccountRow | None:
    return _row(store.query_one(f"{_SELECT} WHERE account_id = ?", [account_id]))


def by_invite(store: Store, invite_hash: str) -> AccountRow | None:
    return _row(store.query_one(f"{_SELECT} WHERE invite_hash = ?", [invite_hash]))


def every(store: Store) -> list[AccountRow]:
    return [AccountRow(*row) for row in store.query(f"{_SELECT} ORDER BY email")]


def unused_recovery_codes(store: Store, account_id: str) -> int:
    row = store.query_one("SELECT count(*) FROM account_recovery_codes "
                          "WHERE account_id = ? AND used_at IS NULL", [account_id])  # fmt: skip
    return int(row[0]) if row else 0


def token_active(store: Store, token_id: str) -> bool:
    row = store.query_one("SELECT NOT revoked FROM tokens WHERE token_id = ?", [token_id])
    return bool(row and row[0])


def audit(store: Store, limit: int = 200, action: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE action LIKE ?", [action + "%"]) if action else ("", [])
    rows = store.query(f"SELECT seq, occurred_at, actor, action, subject, ip, detail "
                       f"FROM audit_log {where} ORDER BY seq DESC LIMIT ?",
                       [*params, limit])  # fmt: skip
    return [{"seq": r[0], "at": r[1].isoformat(), "actor": r[2], "action": r[3],
             "subject": r[4], "ip": r[5], "detail": json.loads(r[6]) if r[6] else {}}
            for r in rows]  # fmt: skip


# -- writes (on the writer's connection, inside its transaction) ------------------------
def record(con: duckdb.DuckDBPyConnection, at: datetime, actor: str, action: str,
           subject: str | None = None, ip: str | None = None,
           detail: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Append one audit entry; ``seq`` orders entries (one writer, so max + 1 is safe)."""
    con.execute(
        "INSERT INTO audit_log SELECT coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ?, ? FROM audit_log",
        [at, actor, action, subject, ip, json.dumps(detail or {}, sort_keys=True)],
    )


def upsert_invite(con: duckdb.DuckDBPyConnection, email: str, role: str, name: str | None,
                  invite_hash: str, expires_at: datetime, invited_by: str,
                  now: datetime) -> str:  # fmt: skip
    """A new invited account, or a fresh invite for one that never finished enrolment."""
    existing = con.execute("SELECT account_id FROM accounts WHERE email = ?", [email]).fetchone()
    if existing:
        con.execute(
            "UPDATE accounts SET role = ?, name = coalesce(?, name), invite_hash = ?, "
            "invite_expires_at = ?, invited_by = ?, invited_at = ?, password_hash = NULL, "
            "totp_secret = NULL, totp_confirmed = FALSE, totp_last_step = NULL, "
            "disabled_at = NULL, failed_attempts = 0, locked_until = NULL WHERE account_id = ?",
            [role, name, invite_hash, expires_at, invited_by, now, existing[0]],
        )
        return str(existing[0])
    account_id = "acc_" + uuid.uuid4().hex[:12]
    con.execute(
        "INSERT INTO accounts (account_id, email, name, role, invite_hash, invite_expires_at, "
        "invited_by, created_at, invited_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [account_id, email, name, role, invite_hash, expires_at, invited_by, now, now],
    )
    return account_id


def set_password(con: duckdb.DuckDBPyConnection, account_id: str, password_hash: str,
                 totp_secret: str) -> None:  # fmt: skip
    con.execute("UPDATE accounts SET password_hash = ?, totp_secret = ?, totp_confirmed = FALSE "
                "WHERE account_id = ?", [password_hash, totp_secret, account_id])  # fmt: skip


def activate(con: duckdb.DuckDBPyConnection, account_id: str, step: int,
             code_hashes: list[str], now: datetime) -> None:  # fmt: skip
    """TOTP confirmed: the invite is spent, the recovery codes replace any earlier ones."""
    con.execute("UPDATE accounts SET totp_confirmed = TRUE, totp_last_step = ?, "
                "invite_hash = NULL, invite_expires_at = NULL, activated_at = ? "
                "WHERE account_id = ?", [step, now, account_id])  # fmt: skip
    con.execute("DELETE FROM account_recovery_codes WHERE account_id = ?", [account_id])
    con.executemany("INSERT INTO account_recovery_codes VALUES (?, ?, ?, NULL)",
                    [[account_id, code, now] for code in code_hashes])  # fmt: skip


def claim_step(con: duckdb.DuckDBPyConnection, account_id: str, step: int) -> bool:
    """Use TOTP time step ``step`` once: False when it (or a later one) was used already."""
    row = con.execute("UPDATE accounts SET totp_last_step = ? WHERE account_id = ? AND "
                      "coalesce(totp_last_step, -1) < ? RETURNING 1",
                      [step, account_id, step]).fetchone()  # fmt: skip
    return row is not None


def claim_recovery_code(con: duckdb.DuckDBPyConnection, account_id: str, code_hash: str,
                        now: datetime) -> bool:  # fmt: skip
    row = con.execute("UPDATE account_recovery_codes SET used_at = ? WHERE account_id = ? "
                      "AND code_hash = ? AND used_at IS NULL RETURNING 1",
                      [now, account_id, code_hash]).fetchone()  # fmt: skip
    return row is not None


def signed_in(con: duckdb.DuckDBPyConnection, account_id: str, now: datetime) -> None:
    con.execute("UPDATE accounts SET failed_attempts = 0, locked_until = NULL, "
                "last_sign_in_at = ? WHERE account_id = ?", [now, account_id])  # fmt: skip


def failed(con: duckdb.DuckDBPyConnection, account_id: str, max_failures: int,
           locked_until: datetime) -> bool:  # fmt: skip
    """Count a failure; at ``max_failures`` in a row lock the account. True when it locked."""
    row = con.execute("UPDATE accounts SET failed_attempts = failed_attempts + 1 "
                      "WHERE account_id = ? RETURNING failed_attempts",
                      [account_id]).fetchone()  # fmt: skip
    if row is None or int(row[0]) < max_failures:
        return False
    con.execute("UPDATE accounts SET failed_attempts = 0, locked_until = ? WHERE account_id = ?",
                [locked_until, account_id])  # fmt: skip
    return True


def set_role(con: duckdb.DuckDBPyConnection, email: str, role: str) -> str | None:
    """The previous role, or None when no account has this email."""
    row = con.execute("SELECT role FROM accounts WHERE email = ?", [email]).fetchone()
    if row is None:
        return None
    con.execute("UPDATE accounts SET role = ? WHERE email = ?", [role, email])
    return str(row[0])


def disable(con: duckdb.DuckDBPyConnection, email: str, now: datetime) -> bool:
    """Disable an account (and spend its invite); False when no account has this email."""
    row = con.execute("UPDATE accounts SET disabled_at = coalesce(disabled_at, ?), "
                      "invite_hash = NULL WHERE email = ? RETURNING 1",
                      [now, email]).fetchone()  # fmt: skip
    return row is not None
