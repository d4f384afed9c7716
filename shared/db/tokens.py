"""The ``api_tokens`` table: API tokens of the HTTP API, by id, with only their secret's hash.

``supervisor.tokens`` makes and checks tokens; this module only stores and finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

_FIELDS = (
    "id, name, scope, secret_sha256, max_upload_mb, created_at, expires_at, revoked_at,"
    " last_used_at"
)
# last_used_at is written at most this often per token, by the database's clock.
LAST_USED_RESOLUTION_SECONDS = 60


@dataclass(frozen=True)
class TokenRow:
    id: str
    name: str
    scope: str
    secret_sha256: bytes
    max_upload_mb: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The record as shown to people and scripts: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "max_upload_mb": self.max_upload_mb,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


def _row(row: Any) -> TokenRow:
    if isinstance(row, dict):
        return TokenRow(**{**row, "secret_sha256": bytes(row["secret_sha256"])})
    return TokenRow(*row[:3], bytes(row[3]), *row[4:])


def insert(
    conn: psycopg.Connection[Any],
    *,
    token_id: str,
    name: str,
    scope: str,
    secret_sha256: bytes,
    expires_at: datetime | None,
    max_upload_mb: int | None = None,
) -> TokenRow:
    """Store a new token; raises ``psycopg.errors.UniqueViolation`` when a live token
    already has ``name``."""
    row = conn.execute(
        "INSERT INTO api_tokens (id, name, scope, secret_sha256, expires_at, max_upload_mb)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_FIELDS}",
        (token_id, name, scope, secret_sha256, expires_at, max_upload_mb),
    ).fetchone()
    assert row is not None
    return _row(row)


def find(conn: psycopg.Connection[Any], token_id: str) -> tuple[TokenRow, bool] | None:
    """The token with this id and whether it has expired, by the database's clock (every
    host shares it)."""
    row = conn.execute(
        f"SELECT {_FIELDS}, coalesce(expires_at <= now(), false) AS expired"
        " FROM api_tokens WHERE id = %s",
        (token_id,),
    ).fetchone()
    if row is None:
        return None
    expired = bool(row.pop("expired") if isinstance(row, dict) else row[-1])
    return _row(row if isinstance(row, dict) else row[:-1]), expired


def all_tokens(conn: psycopg.Connection[Any]) -> list[TokenRow]:
    rows = conn.execute(f"SELECT {_FIELDS} FROM api_tokens ORDER BY created_at, id").fetchall()
    return [_row(r) for r in rows]


def revoke(conn: psycopg.Connection[Any], ref: str) -> TokenRow | None:
    """Revoke the live token named ``ref``, or the token whose id is ``ref``; None when
    there is none (or it was revoked before)."""
    for column in ("id", "name"):  # an id first: it names one token for ever
        row = conn.execute(
            f"UPDATE api_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND {column} = %s"
            f" RETURNING {_FIELDS}",
            (ref,),
        ).fetchone()
        if row is not None:
            return _row(row)
    return None


def live_count(conn: psycopg.Connection[Any]) -> int:
    """Tokens that would be accepted now: neither revoked nor expired."""
    row = conn.execute(
        "SELECT count(*) AS n FROM api_tokens"
        " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
    ).fetchone()
    assert row is not None
    return int(row["n"] if isinstance(row, dict) else row[0])


def touch(conn: psycopg.Connection[Any], token_id: str) -> None:
    """Record a use; a no-op when one was recorded within the resolution."""
    conn.execute(
        "UPDATE api_tokens SET last_used_at = now() WHERE id = %s AND"
        " (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => %s))",
        (token_id, LAST_USED_RESOLUTION_SECONDS),
    )
