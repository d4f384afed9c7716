"""Read-only questions about documents: ``ingestd status``, ``ingestd show``, ``/v1/status``,
``ingest --wait`` and the supervisor's ``--drain`` and lease checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.states import RUNNABLE, TERMINAL, Status


def counts_by_status(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts = {str(s): 0 for s in Status}
    for row in conn.execute("SELECT status, count(*) AS n FROM documents GROUP BY status"):
        counts[str(row["status"])] = row["n"]
    return counts


def queue_summary(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT"
        " coalesce(extract(epoch FROM now() - min(run_after) FILTER ("
        "   WHERE status = ANY(%s::document_status[]) AND run_after <= now())), 0)"
        "   AS oldest_runnable_age_seconds,"
        " count(*) FILTER (WHERE status = ANY(%s::document_status[]) AND run_after <= now())"
        "   AS runnable,"
        " count(*) FILTER (WHERE lease_owner IS NOT NULL) AS leased,"
        " coalesce(sum(embed_tokens), 0) AS embed_tokens,"
        " coalesce(sum(cost_usd), 0) AS cost_usd"
        " FROM documents",
        ([str(s) for s in RUNNABLE], [str(s) for s in RUNNABLE]),
    ).fetchone()
    assert row is not None
    return {
        "runnable": row["runnable"],
        "leased": row["leased"],
        "oldest_runnable_age_seconds": float(row["oldest_runnable_age_seconds"]),
        "embed_tokens": int(row["embed_tokens"]),
        "cost_usd": float(row["cost_usd"]),
    }


def completed_since(conn: psycopg.Connection[Any], seconds: float) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM documents WHERE status = 'complete'"
        " AND completed_at > now() - make_interval(secs => %s)",
        (seconds,),
    ).fetchone()
    return int(row["n"]) if row else 0


_DOC_FIELDS = (
    "id, source, filename, mime_type, size_bytes, content_sha256, correlation_id, status,"
    " attempts, run_after, lease_owner, lease_expires_at, error_class, error_message, parser,"
    " chunker, chunker_version, embedding_model, parsed_chars, pages, chunks_total,"
    " chunks_embedded, tokens_total, embed_tokens, cost_usd, created_at, updated_at,"
    " started_at, completed_at"
)


def document(conn: psycopg.Connection[Any], doc_id: UUID) -> dict[str, Any] | None:
    return conn.execute(f"SELECT {_DOC_FIELDS} FROM documents WHERE id = %s", (doc_id,)).fetchone()


def events(conn: psycopg.Connection[Any], doc_id: UUID) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT at, event, stage, from_status, to_status, attempt, worker, error_class,"
        " message, details FROM document_events WHERE document_id = %s ORDER BY id",
        (doc_id,),
    ).fetchall()


def find_document_id(conn: psycopg.Connection[Any], prefix: str) -> UUID | None:
    """Accept a full id or an unambiguous prefix, as operators paste them."""
    try:
        return UUID(prefix)
    except ValueError:
        pass
    rows = conn.execute(
        "SELECT id FROM documents WHERE id::text LIKE %s LIMIT 2", (prefix.lower() + "%",)
    ).fetchall()
    return rows[0]["id"] if len(rows) == 1 else None


def status_of(conn: psycopg.Connection[Any], doc_id: UUID) -> Status | None:
    row = conn.execute("SELECT status FROM documents WHERE id = %s", (doc_id,)).fetchone()
    return None if row is None else Status(row["status"])


def statuses(conn: psycopg.Connection[Any], ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    """Status and error of each of ``ids`` that exists."""
    rows = conn.execute(
        "SELECT id, status, error_class, error_message FROM documents WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {r["id"]: r for r in rows}


def outstanding_documents(conn: psycopg.Connection[Any]) -> int:
    """Documents a ``--drain`` run still waits for: every non-terminal document —
    runnable, in flight, or waiting for a scheduled retry — except those parked in
    ``awaiting_parse`` until a future ``run_after`` (their parser's callback may take
    half an hour; a later run or the HTTP child's webhook picks them up)."""
    row = conn.execute(
        "SELECT count(*) AS n FROM documents"
        " WHERE NOT (status = ANY(%s::document_status[]))"
        " AND NOT (status = %s AND run_after > now())",
        ([str(s) for s in TERMINAL], str(Status.AWAITING_PARSE)),
    ).fetchone()
    return int(row["n"]) if row else 0


def leased_by(conn: psycopg.Connection[Any], owner: str) -> list[UUID]:
    rows = conn.execute("SELECT id FROM documents WHERE lease_owner = %s", (owner,)).fetchall()
    return [r["id"] for r in rows]


def limit_statement_time(conn: psycopg.Connection[Any], seconds: float) -> None:
    """Cancel any statement on ``conn`` that runs longer than ``seconds`` (for readers that
    must stay responsive, such as ``ingestd run``'s live view)."""
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false)", (f"{max(1, int(seconds * 1000))}",)
    )


def live_summary(
    conn: psycopg.Connection[Any], *, failed_since: datetime, failures: int
) -> dict[str, Any]:
    """What ``ingestd run``'s live view shows, in one statement: documents by status, the
    runnable queue, the totals its rates are computed from, and the ``failures`` latest
    documents that failed or died since ``failed_since`` (message cut to one short line)."""
    row = conn.execute(
        "WITH agg AS ("
        "  SELECT status, count(*) AS n,"
        "   count(*) FILTER (WHERE status = ANY(%s::document_status[]) AND run_after <= now())"
        "     AS runnable,"
        "   coalesce(sum(chunks_embedded), 0) AS chunks,"
        "   coalesce(sum(embed_tokens), 0) AS tokens,"
        "   coalesce(sum(cost_usd), 0) AS cost"
        "  FROM documents GROUP BY status)"
        " SELECT"
        "  (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb) FROM agg) AS counts,"
        "  (SELECT coalesce(sum(runnable), 0) FROM agg) AS runnable,"
        "  (SELECT coalesce(sum(chunks), 0) FROM agg) AS chunks,"
        "  (SELECT coalesce(sum(tokens), 0) FROM agg) AS tokens,"
        "  (SELECT coalesce(sum(cost), 0) FROM agg) AS cost_usd,"
        "  (SELECT coalesce(jsonb_agg(f ORDER BY f.updated_at DESC), '[]'::jsonb) FROM ("
        "    SELECT id, filename, status, error_class,"
        "     left(split_part(error_message, E'\\n', 1), 200) AS error_message, updated_at"
        "    FROM documents WHERE status IN ('failed', 'dead') AND updated_at >= %s"
        "    ORDER BY updated_at DESC LIMIT %s) f) AS failures",
        ([str(s) for s in RUNNABLE], failed_since, failures),
    ).fetchone()
    assert row is not None
    return {
        "counts": {str(k): int(v) for k, v in row["counts"].items()},
        "runnable": int(row["runnable"]),
        "chunks": int(row["chunks"]),
        "tokens": int(row["tokens"]),
        "cost_usd": float(row["cost_usd"]),
        "failures": list(row["failures"]),
    }


_PAGE_FIELDS = (
    "id, filename, mime_type, size_bytes, status, attempts, error_class, chunks_total,"
    " chunks_embedded, created_at, updated_at, completed_at"
)


def documents_page(
    conn: psycopg.Connection[Any],
    *,
    limit: int,
    status: Status | None = None,
    after: tuple[datetime, UUID] | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit`` documents in (created_at, id) order, those after ``after``:
    keyset paging, so a page costs the same however deep, and a document created
    meanwhile shows up at the end instead of shifting every page."""
    where = ["true"]
    params: list[Any] = []
    if status is not None:
        where.append("status = %s")
        params.append(str(status))
    if after is not None:
        where.append("(created_at, id) > (%s, %s)")
        params.extend(after)
    params.append(limit)
    return conn.execute(
        f"SELECT {_PAGE_FIELDS} FROM documents WHERE {' AND '.join(where)}"
        " ORDER BY created_at, id LIMIT %s",
        params,
    ).fetchall()
