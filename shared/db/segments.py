"""Parsed text, stored in bounded segments so any worker on any host continues from
``parsed`` and nobody holds a whole document in memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg

READ_PAGE = 64  # segments per query when reading back


def clear(conn: psycopg.Connection[Any], doc_id: UUID | Sequence[UUID]) -> None:
    ids = [doc_id] if isinstance(doc_id, UUID) else list(doc_id)
    conn.execute("DELETE FROM parsed_segments WHERE document_id = ANY(%s)", (ids,))


def write(conn: psycopg.Connection[Any], doc_id: UUID, start_seq: int, texts: Iterable[str]) -> int:
    """COPY segments numbered from ``start_seq``; return how many were written."""
    return write_many(conn, ((doc_id, start_seq + i, t) for i, t in enumerate(texts)))


def write_many(conn: psycopg.Connection[Any], rows: Iterable[tuple[UUID, int, str]]) -> int:
    """COPY (document, seq, text) segments of any number of documents."""
    n = 0
    with conn.cursor().copy("COPY parsed_segments (document_id, seq, text) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def read(conn: psycopg.Connection[Any], doc_id: UUID) -> Iterator[str]:
    """Yield the document's segments in order, a page of them at a time."""
    last = -1
    while True:
        rows = conn.execute(
            "SELECT seq, text FROM parsed_segments WHERE document_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            (doc_id, last, READ_PAGE),
        ).fetchall()
        if not rows:
            return
        for r in rows:
            yield r["text"]
        last = rows[-1]["seq"]
