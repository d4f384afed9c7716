"""Connections: which server, and how every connection is set up."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row

from ingestd.shared.db.embedded import embedded_url
from ingestd.shared.settings import Settings


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded_url(settings.home)


def configure(conn: psycopg.Connection[Any]) -> None:
    """Every connection: pgvector's types registered (for vectors as query parameters).

    The vector type exists only after migrations; before them, plain rows are enough."""
    with contextlib.suppress(psycopg.ProgrammingError):
        register_vector(conn)


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "ingestd"
) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(
        url, autocommit=autocommit, row_factory=dict_row, application_name=application_name
    )
    configure(conn)
    return conn
