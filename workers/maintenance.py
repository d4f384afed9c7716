"""The HNSW index on ``chunks.embedding``, built once enough vectors exist.

Building HNSW incrementally from the first row makes every vector insert of a
bulk ingestion pay for graph maintenance; building it at once over many rows is
far cheaper (pgai does the same). So an idle worker checks, at most once a
minute, whether the index is missing and the table is big enough, and builds it
``CONCURRENTLY`` (writers are not blocked) under an advisory lock so that one
worker on one host does it. From then on PostgreSQL keeps it up incrementally.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from ingestd.shared.db.connect import connect
from ingestd.shared.telemetry.logs import get_logger

INDEX_NAME = "chunks_embedding_hnsw"
_LOCK = 0x686E7377  # "hnsw"
log = get_logger("ingestd.maintenance")


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


def maybe_build_index(url: str, *, min_rows: int) -> bool:
    """Build the index if it is missing and ``min_rows`` vectors exist. True if built."""
    with connect(url, autocommit=True, application_name="ingestd-maintenance") as conn:
        if index_state(conn) == "valid":
            return False
        if not conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_LOCK,)).fetchone()["got"]:
            return False  # another worker is building it
        try:
            typed = conn.execute(
                "SELECT atttypmod > 0 AS typed FROM pg_attribute"
                " WHERE attrelid = 'chunks'::regclass AND attname = 'embedding'"
            ).fetchone()["typed"]
            if not typed:
                return False  # no embedding space fixed yet
            have = conn.execute(
                "SELECT count(*) AS n FROM (SELECT 1 FROM chunks WHERE embedding IS NOT NULL"
                " LIMIT %s) s",
                (min_rows,),
            ).fetchone()["n"]
            if have < min_rows:
                return False
            if index_state(conn) == "invalid":
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX_NAME}")
            log.info("building the HNSW index", rows_at_least=have)
            conn.execute("SET maintenance_work_mem = '256MB'")
            conn.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX_NAME}"
                " ON chunks USING hnsw (embedding vector_cosine_ops)"
            )
            log.info("HNSW index built")
            return True
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))


class IndexMaintainer:
    """Runs ``maybe_build_index`` off the worker's main thread, so heartbeats and
    claims go on while PostgreSQL builds."""

    def __init__(self, url: str, *, min_rows: int, interval: float = 60.0) -> None:
        self.url = url
        self.min_rows = min_rows
        self.interval = interval
        self._next = 0.0
        self._thread: threading.Thread | None = None

    def poke(self, now: float) -> None:
        if now < self._next or (self._thread is not None and self._thread.is_alive()):
            return
        self._next = now + self.interval
        self._thread = threading.Thread(target=self._run, name="hnsw-index", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            maybe_build_index(self.url, min_rows=self.min_rows)
        except psycopg.Error as exc:
            # Reported, not fatal: search works without the index, only slower.
            log.error("building the HNSW index failed", error=str(exc).splitlines()[0])
