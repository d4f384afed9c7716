"""The ``supervisor_status`` and ``worker_status`` tables: what running supervisors
publish about themselves and their workers, and the questions asked of it
(``ingestd status``, readiness, ``ingest --wait``, finding a local supervisor)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def publish(
    conn: psycopg.Connection[Any],
    *,
    supervisor: str,
    pid: int,
    host: str,
    started_at: datetime,
    state: str,
    details: Mapping[str, Any],
    workers: Iterable[Mapping[str, Any]],
) -> None:
    """Replace this supervisor's rows with the current truth, in one transaction.

    ``workers``: dicts with slot, pid, owner, started_at, heartbeat_age (seconds or
    None), uss_bytes, document_id, stage, documents_done.
    """
    rows = list(workers)
    with conn.transaction():
        conn.execute(
            "INSERT INTO supervisor_status"
            " (supervisor, pid, hostname, started_at, updated_at, state, details)"
            " VALUES (%s, %s, %s, %s, now(), %s, %s)"
            " ON CONFLICT (supervisor) DO UPDATE SET updated_at = now(),"
            " state = EXCLUDED.state, details = EXCLUDED.details",
            (supervisor, pid, host, started_at, state, Jsonb(dict(details))),
        )
        conn.execute(
            "DELETE FROM worker_status WHERE supervisor = %s AND NOT (slot = ANY(%s))",
            (supervisor, [r["slot"] for r in rows]),
        )
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO worker_status (supervisor, slot, pid, owner, started_at,"
                    " heartbeat_at, uss_bytes, document_id, stage, documents_done, updated_at)"
                    " VALUES (%(supervisor)s, %(slot)s, %(pid)s, %(owner)s, %(started_at)s,"
                    " now() - make_interval(secs => %(heartbeat_age)s), %(uss_bytes)s,"
                    " %(document_id)s, %(stage)s, %(documents_done)s, now())"
                    " ON CONFLICT (supervisor, slot) DO UPDATE SET pid = EXCLUDED.pid,"
                    " owner = EXCLUDED.owner, started_at = EXCLUDED.started_at,"
                    " heartbeat_at = EXCLUDED.heartbeat_at, uss_bytes = EXCLUDED.uss_bytes,"
                    " document_id = EXCLUDED.document_id, stage = EXCLUDED.stage,"
                    " documents_done = EXCLUDED.documents_done, updated_at = now()",
                    [
                        {**r, "supervisor": supervisor, "document_id": _uuid_or_none(r)}
                        for r in rows
                    ],
                )


def _uuid_or_none(row: Mapping[str, Any]) -> uuid.UUID | None:
    # A heartbeat is the worker's word, not a checked value: a malformed id is dropped
    # from the status table rather than failing the whole publication.
    value = row.get("document_id")
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def withdraw(conn: psycopg.Connection[Any], supervisor: str) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM worker_status WHERE supervisor = %s", (supervisor,))
        conn.execute("DELETE FROM supervisor_status WHERE supervisor = %s", (supervisor,))


def on_host(conn: psycopg.Connection[Any], host: str) -> list[dict[str, Any]]:
    """Supervisors published from ``host``, the most recently started first."""
    return conn.execute(
        "SELECT supervisor, pid, state, details FROM supervisor_status WHERE hostname = %s"
        " ORDER BY started_at DESC",
        (host,),
    ).fetchall()


def worker_slots(conn: psycopg.Connection[Any], supervisor: str) -> list[int]:
    rows = conn.execute(
        "SELECT slot FROM worker_status WHERE supervisor = %s ORDER BY slot", (supervisor,)
    ).fetchall()
    return [r["slot"] for r in rows]


def all_workers(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every published worker, with its heartbeat age and uptime in seconds."""
    return conn.execute(
        "SELECT supervisor, slot, pid, owner, uss_bytes, document_id, stage, documents_done,"
        " extract(epoch FROM now() - heartbeat_at) AS heartbeat_age_seconds,"
        " extract(epoch FROM now() - started_at) AS uptime_seconds"
        " FROM worker_status ORDER BY supervisor, slot"
    ).fetchall()


def all_supervisors(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT supervisor, pid, hostname, state, started_at, updated_at, details"
        " FROM supervisor_status ORDER BY supervisor"
    ).fetchall()


def workers_alive(conn: psycopg.Connection[Any], *, within_seconds: float) -> int:
    """Workers whose heartbeat was published in the last ``within_seconds``."""
    row = conn.execute(
        "SELECT count(*) AS n FROM worker_status"
        " WHERE heartbeat_at > now() - make_interval(secs => %s)",
        (within_seconds,),
    ).fetchone()
    return int(row["n"]) if row else 0
