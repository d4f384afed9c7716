"""The SQL behind asynchronous (LlamaParse) parse results: applying a result or a failure
to a parked document, replay records for webhook deliveries, and results by content hash.

A document waiting for its parser rests in ``awaiting_parse`` with no lease. Whoever
brings the result (the webhook, or a worker polling after the deadline) changes it in
one transaction conditioned on that resting state and the job id, so of two racing
deliveries exactly one applies and the other finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.db import jobs, segments
from ingestd.shared.errors import IngestError
from ingestd.shared.parsers import DEFAULT_BLOCK_CHARS
from ingestd.shared.parsers.blocks import split_bounded
from ingestd.shared.states import Status

REMOTE_PARSER = "llamaparse"


class Applied(StrEnum):
    APPLIED = "applied"  # the document moved on
    DUPLICATE = "duplicate"  # this delivery (same signature) was applied before
    NOT_WAITING = "not_waiting"  # the document is no longer waiting for this job


@dataclass(frozen=True)
class JobDocument:
    id: UUID
    status: Status
    correlation_id: UUID
    content_sha256: str
    attempts: int


@dataclass(frozen=True)
class Written:
    segments: int
    chars: int


@dataclass(frozen=True)
class FailureOutcome:
    applied: Applied
    status: Status | None = None  # failed, dead, or awaiting_parse (a re-upload is scheduled)


@dataclass(frozen=True)
class ParseResult:
    content_sha256: str
    parser: str
    job_id: str
    segments: int
    chars: int
    pages: int | None


def document_for_job(conn: psycopg.Connection[Any], job_id: str) -> JobDocument | None:
    row = conn.execute(
        "SELECT id, status, correlation_id, content_sha256, attempts FROM documents"
        " WHERE parse_job_id = %s",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    return JobDocument(
        id=row["id"],
        status=Status(row["status"]),
        correlation_id=row["correlation_id"],
        content_sha256=row["content_sha256"],
        attempts=row["attempts"],
    )


def delivery_recorded(conn: psycopg.Connection[Any], signature: str) -> bool:
    row = conn.execute(
        "SELECT 1 AS found FROM webhook_deliveries WHERE signature = %s", (signature,)
    ).fetchone()
    return row is not None


def _record_delivery(conn: psycopg.Connection[Any], signature: str, job_id: str) -> bool:
    """Insert the replay record; False when the same delivery was recorded first."""
    row = conn.execute(
        "INSERT INTO webhook_deliveries (signature, job_id) VALUES (%s, %s)"
        " ON CONFLICT (signature) DO NOTHING RETURNING signature",
        (signature, job_id),
    ).fetchone()
    return row is not None


def prune_deliveries(conn: psycopg.Connection[Any], *, older_than_seconds: float) -> int:
    """Forget replay records older than any delivery that could still pass the freshness check."""
    cur = conn.execute(
        "DELETE FROM webhook_deliveries WHERE received_at < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    )
    return cur.rowcount


def write_markdown(conn: psycopg.Connection[Any], doc_id: UUID, markdown: str) -> Written:
    """Replace the document's parsed segments with ``markdown`` in bounded segments."""
    segments.clear(conn, doc_id)
    chars = 0

    def pieces() -> Iterator[str]:
        nonlocal chars
        for piece in split_bounded(markdown, DEFAULT_BLOCK_CHARS):
            chars += len(piece)
            yield piece

    n = segments.write(conn, doc_id, 0, pieces())
    return Written(n, chars)


def _lock_waiting(conn: psycopg.Connection[Any], doc_id: UUID, job_id: str) -> int | None:
    """Lock the document if it is still parked, unleased, waiting for ``job_id``;
    return its attempts."""
    row = conn.execute(
        "SELECT attempts FROM documents WHERE id = %s AND status = 'awaiting_parse'"
        " AND parse_job_id = %s AND lease_owner IS NULL FOR UPDATE",
        (doc_id, job_id),
    ).fetchone()
    return None if row is None else int(row["attempts"])


def apply_result(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    job_id: str,
    markdown: str,
    pages: int | None,
    signature: str | None,
    via: str,
) -> tuple[Applied, Written | None]:
    """awaiting_parse → parsed with the job's text, in one transaction with the replay
    record (when ``signature`` is given) and the parse result by content hash."""
    outcome: tuple[Applied, Written | None] = (Applied.NOT_WAITING, None)
    with conn.transaction():
        if signature is not None and not _record_delivery(conn, signature, job_id):
            outcome = (Applied.DUPLICATE, None)
            raise psycopg.Rollback()
        if _lock_waiting(conn, doc_id, job_id) is None:
            raise psycopg.Rollback()
        written = write_markdown(conn, doc_id, markdown)
        jobs.parse_result_arrived(
            conn,
            doc_id,
            segments=written.segments,
            chars=written.chars,
            pages=pages,
            parser=REMOTE_PARSER,
            details={
                "job_id": job_id,
                "via": via,
                "segments": written.segments,
                "chars": written.chars,
            },
        )
        record_parse_result(conn, doc_id, job_id=job_id, written=written, pages=pages)
        outcome = (Applied.APPLIED, written)
    return outcome


def apply_failure(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    job_id: str,
    error: IngestError,
    signature: str | None,
    via: str,
    max_attempts: int,
    retry_base: float,
    retry_cap: float,
) -> FailureOutcome:
    """The parser reported the job failed.

    The attempt ends as a worker's would (``jobs.end_parked_attempt``): failed, dead,
    or resting in ``awaiting_parse`` with no job id and a backed-off ``run_after``.
    """
    outcome = FailureOutcome(Applied.NOT_WAITING)
    with conn.transaction():
        if signature is not None and not _record_delivery(conn, signature, job_id):
            outcome = FailureOutcome(Applied.DUPLICATE)
            raise psycopg.Rollback()
        attempts = _lock_waiting(conn, doc_id, job_id)
        if attempts is None:
            raise psycopg.Rollback()
        ended = jobs.end_parked_attempt(
            conn,
            doc_id,
            attempts=attempts,
            error=error,
            max_attempts=max_attempts,
            retry_base=retry_base,
            retry_cap=retry_cap,
            details={"job_id": job_id, "via": via},
        )
        outcome = FailureOutcome(Applied.APPLIED, ended.status)
    return outcome


# -- results by content hash ------------------------------------------------------------


def record_parse_result(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    job_id: str,
    written: Written,
    pages: int | None,
) -> None:
    conn.execute(
        "INSERT INTO parse_results (content_sha256, parser, job_id, segments, chars, pages)"
        " SELECT content_sha256, %s, %s, %s, %s, %s FROM documents WHERE id = %s"
        " ON CONFLICT (content_sha256) DO UPDATE SET parser = EXCLUDED.parser,"
        " job_id = EXCLUDED.job_id, segments = EXCLUDED.segments, chars = EXCLUDED.chars,"
        " pages = EXCLUDED.pages, created_at = now()",
        (REMOTE_PARSER, job_id, written.segments, written.chars, pages, doc_id),
    )


def parse_result_for(conn: psycopg.Connection[Any], content_sha256: str) -> ParseResult | None:
    row = conn.execute(
        "SELECT content_sha256, parser, job_id, segments, chars, pages FROM parse_results"
        " WHERE content_sha256 = %s AND parser = %s",
        (content_sha256, REMOTE_PARSER),
    ).fetchone()
    return None if row is None else ParseResult(**row)


def forget_parse_result(conn: psycopg.Connection[Any], content_sha256: str) -> None:
    conn.execute("DELETE FROM parse_results WHERE content_sha256 = %s", (content_sha256,))


# -- the worker's side of a submitted job ---------------------------------------------------


def job_age_seconds(conn: psycopg.Connection[Any], doc_id: UUID) -> float | None:
    """Seconds since the document's job was submitted (the database's clock), if any."""
    row = conn.execute(
        "SELECT extract(epoch FROM now() - parse_submitted_at) AS age FROM documents WHERE id = %s",
        (doc_id,),
    ).fetchone()
    if row is None or row["age"] is None:
        return None
    return float(row["age"])


def drop_job(conn: psycopg.Connection[Any], doc_id: UUID, owner: str) -> bool:
    """Forget the document's job under ``owner``'s lease; False if the lease is gone."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE documents SET parse_job_id = NULL, parse_submitted_at = NULL"
            " WHERE id = %s AND lease_owner = %s",
            (doc_id, owner),
        )
    return cur.rowcount > 0
