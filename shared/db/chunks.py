"""Writes and reads of the public ``chunks`` table.

Chunk identity is (document, chunker, chunker version, ordinal): a retry
rewrites the same rows, never new ones. Vectors are written only for rows that
have none yet, so a resumed embed stage cannot double-write, and a NULL
embedding means "not embedded yet" — there are no placeholders.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import numpy as np
import psycopg


@dataclass(frozen=True)
class ChunkRow:
    ordinal: int
    text: str
    token_count: int
    heading: str | None = None


def delete_for_chunking(
    conn: psycopg.Connection[Any], doc_id: UUID | Sequence[UUID], chunker: str, version: int
) -> int:
    """Remove what an earlier attempt at chunking this text left, vectors included.

    The chunk stage only runs from ``parsed``: rows found then come from an
    interrupted attempt, or from a life before an operator's retry, whose text and
    chunker settings need not match today's.
    """
    ids = [doc_id] if isinstance(doc_id, UUID) else list(doc_id)
    cur = conn.execute(
        "DELETE FROM chunks WHERE document_id = ANY(%s) AND chunker = %s AND chunker_version = %s",
        (ids, chunker, version),
    )
    return cur.rowcount


def ordinals(conn: psycopg.Connection[Any], doc_id: UUID, chunker: str, version: int) -> set[int]:
    rows = conn.execute(
        "SELECT ordinal FROM chunks WHERE document_id = %s AND chunker = %s"
        " AND chunker_version = %s",
        (doc_id, chunker, version),
    ).fetchall()
    return {r["ordinal"] for r in rows}


def copy_chunks(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    chunker: str,
    version: int,
    rows: Iterable[ChunkRow],
) -> int:
    return copy_chunks_many(conn, chunker, version, ((doc_id, r) for r in rows))


# A chunk row's own columns, as both COPYs below write them.
_ROW_COLUMNS = "document_id, chunker, chunker_version, ordinal, text, token_count, heading"
_ROW_TYPES = ["uuid", "text", "int4", "int4", "text", "int4", "text"]


def _row(doc_id: UUID, chunker: str, version: int, r: ChunkRow) -> tuple[Any, ...]:
    return (doc_id, chunker, version, r.ordinal, r.text, r.token_count, r.heading)


def copy_chunks_many(
    conn: psycopg.Connection[Any],
    chunker: str,
    version: int,
    rows: Iterable[tuple[UUID, ChunkRow]],
) -> int:
    """Binary COPY of chunk rows (without vectors), any number of documents at once."""
    n = 0
    with conn.cursor().copy(f"COPY chunks ({_ROW_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(_ROW_TYPES)
        for doc_id, r in rows:
            copy.write_row(_row(doc_id, chunker, version, r))
            n += 1
    return n


def copy_embedded_many(
    conn: psycopg.Connection[Any],
    chunker: str,
    version: int,
    model: str,
    rows: Iterable[tuple[UUID, ChunkRow]],
    vectors: np.ndarray,
) -> dict[UUID, int]:
    """Binary COPY of new chunk rows together with their vectors; rows per document.

    One write per row instead of a row COPY and a vector UPDATE later: no second
    heap tuple, no dead one, no temp table (~40% less PostgreSQL CPU per chunk,
    profiling/README.md). A row that exists already makes the COPY fail, so call it
    only for rows known to be new, in a transaction.
    """
    now = datetime.now(UTC)
    written: dict[UUID, int] = {}
    with conn.cursor().copy(
        f"COPY chunks ({_ROW_COLUMNS}, embedding, embedding_model, embedded_at)"
        " FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types([*_ROW_TYPES, "bytea", "text", "timestamptz"])
        for (doc_id, r), vec in zip(rows, vectors, strict=True):
            copy.write_row((*_row(doc_id, chunker, version, r), _vector_binary(vec), model, now))
            written[doc_id] = written.get(doc_id, 0) + 1
    return written


def iter_unembedded(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    chunker: str,
    version: int,
    *,
    page: int = 1024,
) -> Iterator[ChunkRow]:
    """Chunks without a vector, in ordinal order, a page at a time (keyset)."""
    last = -1
    while True:
        rows = conn.execute(
            "SELECT ordinal, text, token_count FROM chunks"
            " WHERE document_id = %s AND chunker = %s AND chunker_version = %s"
            " AND embedding IS NULL AND ordinal > %s ORDER BY ordinal LIMIT %s",
            (doc_id, chunker, version, last, page),
        ).fetchall()
        if not rows:
            return
        for r in rows:
            yield ChunkRow(r["ordinal"], r["text"], r["token_count"])
        last = rows[-1]["ordinal"]


def _vector_binary(vec: np.ndarray) -> bytes:
    # pgvector's binary wire format: int16 dims, int16 unused, big-endian float32s.
    return len(vec).to_bytes(2, "big") + b"\x00\x00" + vec.astype(">f4", copy=False).tobytes()


def write_vectors(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    chunker: str,
    version: int,
    model: str,
    ordinals: Sequence[int],
    vectors: np.ndarray,
) -> int:
    """Set the vectors of one document's chunks that have none; return rows written."""
    written = write_vectors_many(
        conn, chunker, version, model, [(doc_id, o) for o in ordinals], vectors
    )
    return written.get(doc_id, 0)


def write_vectors_many(
    conn: psycopg.Connection[Any],
    chunker: str,
    version: int,
    model: str,
    keys: Sequence[tuple[UUID, int]],
    vectors: np.ndarray,
) -> dict[UUID, int]:
    """Set the vectors of chunks, keyed (document, ordinal), that have none yet.

    Binary COPY into a temporary table, then one UPDATE: the fastest way to set vectors
    on rows that exist (new rows go in with theirs: ``copy_embedded_many``), and
    ``embedding IS NULL`` makes a replayed batch write nothing. Returns rows
    written per document. Call in a transaction.
    """
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ingestd_vectors_in"
        " (document_id uuid, ordinal int4, embedding vector) ON COMMIT DELETE ROWS"
    )
    with conn.cursor().copy(
        "COPY ingestd_vectors_in (document_id, ordinal, embedding) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["uuid", "int4", "bytea"])
        for (doc_id, ordinal), vec in zip(keys, vectors, strict=True):
            copy.write_row((doc_id, ordinal, _vector_binary(vec)))
    rows = conn.execute(
        "WITH w AS (UPDATE chunks c SET embedding = v.embedding, embedding_model = %s,"
        " embedded_at = now() FROM ingestd_vectors_in v"
        " WHERE c.document_id = v.document_id AND c.chunker = %s AND c.chunker_version = %s"
        " AND c.ordinal = v.ordinal AND c.embedding IS NULL RETURNING c.document_id)"
        " SELECT document_id, count(*) AS n FROM w GROUP BY document_id",
        (model, chunker, version),
    ).fetchall()
    return {r["document_id"]: int(r["n"]) for r in rows}


def record_embedded(
    conn: psycopg.Connection[Any],
    owner: str,
    model: str,
    progress: Mapping[UUID, tuple[int, int, float]],
) -> None:
    """Add (vectors written, tokens billed, cost) to each document's progress counters,
    in the transaction that wrote the vectors. Only documents still ours are touched."""
    ids = list(progress)
    conn.execute(
        "UPDATE documents d SET chunks_embedded = chunks_embedded + v.n,"
        " embed_tokens = embed_tokens + v.tokens, cost_usd = cost_usd + v.cost,"
        " embedding_model = %s"
        " FROM unnest(%s::uuid[], %s::int4[], %s::int8[], %s::numeric[])"
        " AS v(id, n, tokens, cost) WHERE d.id = v.id AND d.lease_owner = %s",
        (
            model,
            ids,
            [progress[i][0] for i in ids],
            [progress[i][1] for i in ids],
            [progress[i][2] for i in ids],
            owner,
        ),
    )


def embedding_counts(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    chunker: str,
    version: int,
) -> tuple[int, int]:
    """(chunks, chunks with a vector) for one document's chunker version."""
    row = conn.execute(
        "SELECT count(*) AS total, count(embedding) AS embedded FROM chunks"
        " WHERE document_id = %s AND chunker = %s AND chunker_version = %s",
        (doc_id, chunker, version),
    ).fetchone()
    assert row is not None
    return int(row["total"]), int(row["embedded"])


def embedding_counts_many(
    conn: psycopg.Connection[Any], ids: Sequence[UUID], chunker: str, version: int
) -> dict[UUID, tuple[int, int]]:
    """``embedding_counts`` for several documents in one query (absent: no chunks)."""
    rows = conn.execute(
        "SELECT document_id, count(*) AS total, count(embedding) AS embedded FROM chunks"
        " WHERE document_id = ANY(%s) AND chunker = %s AND chunker_version = %s"
        " GROUP BY document_id",
        (list(ids), chunker, version),
    ).fetchall()
    return {r["document_id"]: (int(r["total"]), int(r["embedded"])) for r in rows}


def nearest_chunks(
    conn: psycopg.Connection[Any], vector: Any, *, k: int, snippet_chars: int
) -> list[dict[str, Any]]:
    """The ``k`` chunks of complete documents nearest ``vector`` by cosine distance,
    each with its document, heading and the start of its text."""
    return conn.execute(
        "SELECT c.document_id, d.filename, d.source, c.ordinal, c.heading,"
        " c.embedding <=> %s AS distance, left(c.text, %s) AS snippet"
        " FROM chunks c JOIN documents d ON d.id = c.document_id"
        " WHERE c.embedding IS NOT NULL AND d.status = 'complete'"
        " ORDER BY c.embedding <=> %s LIMIT %s",
        (vector, snippet_chars, vector, k),
    ).fetchall()
