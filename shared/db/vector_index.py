"""The HNSW index on ``chunks.embedding``: its state, and building it once.

Building runs ``CONCURRENTLY`` (writers are not blocked), so it needs an
autocommit connection; an advisory lock lets one builder at a time do it.
"""

from __future__ import annotations

from typing import Any

import psycopg

INDEX_NAME = "chunks_embedding_hnsw"
_LOCK = 0x686E7377  # "hnsw"
# A build sorts the graph's neighbours in memory; the session default is far too small.
_BUILD_WORK_MEM = "256MB"


def index_state(conn: psycopg.Connection[Any]) -> str:
    """'valid', 'invalid' (a failed concurrent build left it) or 'missing'."""
    row = conn.execute(
        "SELECT i.indisvalid AS valid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE c.relname = %s",
        (INDEX_NAME,),
    ).fetchone()
    if row is None:
        return "missing"
    return "valid" if row["valid"] else "invalid"


def try_lock_builder(conn: psycopg.Connection[Any]) -> bool:
    """Become the one builder (session lock); False if another session is it."""
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_LOCK,)).fetchone()["got"])


def unlock_builder(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))


def space_fixed(conn: psycopg.Connection[Any]) -> bool:
    """Whether the embedding column has its dimension yet (``shared.db.space``)."""
    row = conn.execute(
        "SELECT atttypmod > 0 AS typed FROM pg_attribute"
        " WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
    ).fetchone()
    return bool(row["typed"])


def vectors_at_least(conn: psycopg.Connection[Any], n: int) -> int:
    """How many stored vectors there are, counting no further than ``n``."""
    row = conn.execute(
        "SELECT count(*) AS n FROM (SELECT 1 FROM chunks WHERE embedding IS NOT NULL LIMIT %s) s",
        (n,),
    ).fetchone()
    return int(row["n"])


def build(conn: psycopg.Connection[Any]) -> None:
    """(Re)build the index concurrently, dropping an invalid leftover first."""
    if index_state(conn) == "invalid":
        conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}")
    conn.execute(f"SET maintenance_work_mem = '{_BUILD_WORK_MEM}'")
    conn.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX_NAME}"
        " ON chunks USING hnsw (embedding vector_cosine_ops)"
    )
