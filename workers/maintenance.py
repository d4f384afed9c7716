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

import psycopg

from ingestd.shared.db import vector_index
from ingestd.shared.db.connect import connect
from ingestd.shared.db.vector_index import INDEX_NAME, index_state
from ingestd.shared.errors import first_line
from ingestd.shared.telemetry.logs import get_logger

# The index's name and state are re-exported: callers ask the maintenance module.
__all__ = ["INDEX_NAME", "IndexMaintainer", "index_state", "maybe_build_index"]

log = get_logger("ingestd.maintenance")


def maybe_build_index(url: str, *, min_rows: int) -> bool:
    """Build the index if it is missing and ``min_rows`` vectors exist. True if built."""
    with connect(url, autocommit=True, application_name="ingestd-maintenance") as conn:
        if index_state(conn) == "valid":
            return False
        if not vector_index.try_lock_builder(conn):
            return False  # another worker is building it
        try:
            if not vector_index.space_fixed(conn):
                return False  # no embedding space fixed yet
            have = vector_index.vectors_at_least(conn, min_rows)
            if have < min_rows:
                return False
            log.info("building the HNSW index", rows_at_least=have)
            vector_index.build(conn)
            log.info("HNSW index built")
            return True
        finally:
            vector_index.unlock_builder(conn)


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
            log.error("building the HNSW index failed", error=first_line(exc))
