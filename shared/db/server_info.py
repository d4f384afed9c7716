"""What the server itself is: its version, pgvector's version, its data directory
(read by ``ingestd doctor``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Text built from the integer the server reports at connect time: no query needed.
_MAJOR_SINCE_10 = 10_000


def server_version(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    """(``server_version_num``, "16.4")."""
    num = conn.info.server_version
    major, minor = divmod(num, _MAJOR_SINCE_10)
    return num, f"{major}.{minor}"


@dataclass(frozen=True)
class ExtensionVersions:
    installed: str | None  # in this database (CREATE EXTENSION was run)
    available: str | None  # the server's packaged default, None: not on the server at all


def pgvector_versions(conn: psycopg.Connection[Any]) -> ExtensionVersions:
    row = conn.execute(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed,"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')"
        " AS available"
    ).fetchone()
    values = list(row.values()) if isinstance(row, dict) else list(row or (None, None))
    return ExtensionVersions(values[0], values[1])


def data_directory(conn: psycopg.Connection[Any]) -> str | None:
    """The server's data directory, None when this role may not read it (it needs
    superuser or pg_read_all_settings)."""
    try:
        with conn.transaction():
            row = conn.execute(sql.SQL("SHOW data_directory")).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    if row is None:
        return None
    return str(next(iter(row.values())) if isinstance(row, dict) else row[0])
