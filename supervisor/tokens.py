"""API tokens: how one is made, written, parsed and checked, and the ``ingestd token``
commands.

A token reads ``ingestd_<id>_<secret>``: the prefix makes a leaked token recognisable
(secret scanners, log greps), the id (12 hex digits, not secret) finds its row, and the
secret is 32 random bytes from ``secrets.token_urlsafe``. Only SHA-256 of the secret is
stored. A fast hash is the right one here: slow hashes (bcrypt, scrypt, argon2) exist to
make guessing a *low-entropy* password expensive, and nobody can guess 256 random bits
however fast the hash, so a slow one would only add latency to every request. The
stored digest is compared with ``hmac.compare_digest``, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from typing import Any

import psycopg

from ingestd.shared.db import tokens as db_tokens
from ingestd.shared.db.tokens import TokenRow
from ingestd.shared.jsonout import dumps

PREFIX = "ingestd_"
_ID_HEX = 12
_TOKEN_RE = re.compile(rf"{PREFIX}([0-9a-f]{{{_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DURATION_RE = re.compile(r"(\d+)([dhw])")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class Scope(IntEnum):
    """Each scope allows what the one below allows, and more."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Scope:
        return cls[text.upper()]


@dataclass(frozen=True)
class Issued:
    token: str  # shown once, never stored
    row: TokenRow


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _TOKEN_RE.fullmatch(token)
    return (match[1], match[2]) if match else None


def issue(
    conn: psycopg.Connection[Any],
    name: str,
    scope: Scope,
    *,
    expires_at: datetime | None = None,
    max_upload_mb: int | None = None,
) -> Issued:
    token_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    row = db_tokens.insert(
        conn,
        token_id=token_id,
        name=name,
        scope=str(scope),
        secret_sha256=digest(secret),
        expires_at=expires_at,
        max_upload_mb=max_upload_mb,
    )
    return Issued(f"{PREFIX}{token_id}_{secret}", row)


class Refusal(IntEnum):
    """Why a presented token was not accepted (logged and counted, never told apart to
    the client: all answer 401 invalid_token)."""

    MALFORMED = 1
    UNKNOWN = 2
    WRONG_SECRET = 3
    REVOKED = 4
    EXPIRED = 5


def check(conn: psycopg.Connection[Any], token: str) -> TokenRow | Refusal:
    """The row of a valid token (its use recorded), or why it is refused."""
    parts = split(token)
    if parts is None:
        return Refusal.MALFORMED
    token_id, secret = parts
    found = db_tokens.find(conn, token_id)
    if found is None:
        return Refusal.UNKNOWN
    row, expired = found
    if not hmac.compare_digest(digest(secret), row.secret_sha256):
        return Refusal.WRONG_SECRET
    if row.revoked_at is not None:
        return Refusal.REVOKED
    if expired:
        return Refusal.EXPIRED
    return row


# -- the ``ingestd token`` commands ---------------------------------------------------------


def parse_expiry(text: str, *, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``2w`` from now, or a date (``2026-12-31``, the end of that day
    UTC) or an ISO 8601 time; raises ValueError with a readable message."""
    now = now or datetime.now(UTC)
    if match := _DURATION_RE.fullmatch(text.strip()):
        amount = int(match[1])
        if amount < 1:
            raise ValueError(f"{text!r}: a duration of at least 1")
        return now + amount * _UNITS[match[2]]
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        when = datetime.combine(day, time.max, tzinfo=UTC)
        return _future(when, text, now)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30d, 12h, 2w) nor a date (2026-12-31)"
        ) from None
    return _future(when if when.tzinfo else when.replace(tzinfo=UTC), text, now)


def _future(when: datetime, text: str, now: datetime) -> datetime:
    if when <= now:
        raise ValueError(f"{text!r} is in the past")
    return when


def create(
    conn: psycopg.Connection[Any],
    name: str,
    scope: str,
    expires: str | None,
    max_upload_mb: int | None,
    *,
    as_json: bool,
) -> int:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"token name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter"
            " or digit"
        )
    expires_at = parse_expiry(expires) if expires else None
    try:
        issued = issue(
            conn, name, Scope.parse(scope), expires_at=expires_at, max_upload_mb=max_upload_mb
        )
    except psycopg.errors.UniqueViolation:
        raise ValueError(
            f"a live token is already named {name!r}: revoke it first (ingestd token revoke"
            f" {name}) or choose another name"
        ) from None
    if as_json:
        print(dumps({"token": issued.token, **issued.row.as_json()}))
    else:
        # The token alone on stdout, so `TOKEN=$(ingestd token create ...)` captures it.
        print(issued.token)
        print(f"token {name!r} ({scope}) created; it is shown only this once", file=sys.stderr)
    return 0


def list_tokens(conn: psycopg.Connection[Any], *, as_json: bool) -> int:
    rows = db_tokens.all_tokens(conn)
    if as_json:
        for row in rows:
            print(dumps(row.as_json()))
        return 0
    if not rows:
        print("no API tokens (create one: ingestd token create --name NAME)", file=sys.stderr)
        return 0
    print(f"{'ID':<13} {'NAME':<24} {'SCOPE':<6} {'STATE':<8} {'EXPIRES':<17} LAST USED")
    now = datetime.now(UTC)
    for row in rows:
        state = (
            "revoked"
            if row.revoked_at
            else "expired"
            if row.expires_at and row.expires_at <= now
            else "live"
        )
        print(
            f"{row.id:<13} {row.name:<24} {row.scope:<6} {state:<8} {_when(row.expires_at):<17}"
            f" {_when(row.last_used_at)}"
        )
    return 0


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if value else "-"


def revoke(conn: psycopg.Connection[Any], ref: str) -> int:
    row = db_tokens.revoke(conn, ref)
    if row is None:
        print(f"no live token has the name or id {ref!r}", file=sys.stderr)
        return 1
    print(f"revoked token {row.name!r} ({row.id})")
    return 0
