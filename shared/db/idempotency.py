"""``Idempotency-Key`` records for ``POST /v1/documents`` (table ``idempotency_keys``).

A key is claimed before the upload is read (one insert; a second request with the same
key sees the claim), completed with the answer once it is known, or released when the
upload failed so the client can try again with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class KeyRecord:
    request_sha256: str | None
    status_code: int | None  # None: the first request with this key is still running
    response: dict[str, Any] | None


def claim(
    conn: psycopg.Connection[Any], key: str, *, keep_seconds: float, stale_seconds: float
) -> KeyRecord | None:
    """Claim ``key`` for this request: None when claimed (no one had it, its record
    expired, or its claim went stale without an answer), else the record that holds it."""
    with conn.transaction():
        conn.execute("DELETE FROM idempotency_keys WHERE expires_at < now()")
        conn.execute(
            "DELETE FROM idempotency_keys WHERE key = %s AND status_code IS NULL"
            " AND created_at < now() - make_interval(secs => %s)",
            (key, stale_seconds),
        )
        row = conn.execute(
            "INSERT INTO idempotency_keys (key, expires_at)"
            " VALUES (%s, now() + make_interval(secs => %s))"
            " ON CONFLICT (key) DO NOTHING RETURNING key",
            (key, keep_seconds),
        ).fetchone()
        if row is not None:
            return None
        held = conn.execute(
            "SELECT request_sha256, status_code, response FROM idempotency_keys WHERE key = %s",
            (key,),
        ).fetchone()
    if held is None:  # expired and pruned between the two statements: claim again
        return claim(conn, key, keep_seconds=keep_seconds, stale_seconds=stale_seconds)
    return KeyRecord(held["request_sha256"], held["status_code"], held["response"])


def complete(
    conn: psycopg.Connection[Any],
    key: str,
    *,
    request_sha256: str,
    status_code: int,
    response: dict[str, Any],
    document_id: UUID,
) -> None:
    conn.execute(
        "UPDATE idempotency_keys SET request_sha256 = %s, status_code = %s, response = %s,"
        " document_id = %s WHERE key = %s",
        (request_sha256, status_code, Jsonb(response), document_id, key),
    )


def release(conn: psycopg.Connection[Any], key: str) -> None:
    """Forget an unanswered claim (the upload failed): the key may be used again."""
    conn.execute("DELETE FROM idempotency_keys WHERE key = %s AND status_code IS NULL", (key,))
