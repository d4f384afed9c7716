"""Versioned migrations: numbered plain-SQL files applied in order, once.

Safe when several processes start together: everything runs in one
transaction holding a transaction-level advisory lock, so the second process
waits, then finds the work done. Each run also copies the state table from
``shared.states`` into ``document_transitions``, so the database refuses
exactly the transitions the code refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from ingestd.shared.states import TRANSITIONS

# Any fixed 64-bit number; "ingestd" in ASCII.
_MIGRATION_LOCK = 0x696E676573746400
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("ingestd.shared.db").joinpath("migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return available()[-1].version


def current_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    if not _first(row):
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations").fetchone()
    return int(_first(row))


def _first(row: Any) -> Any:
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


def migrate(url: str) -> list[int]:
    """Apply pending migrations; return the versions applied by this call."""
    applied: list[int] = []
    with psycopg.connect(url, autocommit=False) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for m in available():
            if m.version in done:
                continue
            conn.execute(m.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (m.version, m.name),
            )
            applied.append(m.version)
        _sync_transitions(conn)
    return applied


def _sync_transitions(conn: psycopg.Connection[Any]) -> None:
    edges = sorted((str(a), str(b)) for a, b in TRANSITIONS)
    conn.execute("DELETE FROM document_transitions")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO document_transitions (from_status, to_status) VALUES (%s, %s)", edges
        )
    # The trigger checks a constant array rather than querying the table: a
    # claim of 50 documents fires it 50 times, and an SPI query per row would
    # cost more than the claim itself. Both are generated from the same edges.
    allowed = ", ".join(f"'{a}>{b}'" for a, b in edges)
    conn.execute(
        f"""
CREATE OR REPLACE FUNCTION ingestd_check_transition() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT ((OLD.status::text || '>' || NEW.status::text) = ANY (ARRAY[{allowed}])) THEN
        RAISE EXCEPTION 'illegal document transition % -> % (document %)',
            OLD.status, NEW.status, OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END $fn$""".encode()
    )
