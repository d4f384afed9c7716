"""The status changes made outside a worker's attempt: a document's creation and
removal, the operator's retry, and the re-embed requeue. Each writes its history."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.db import jobs
from ingestd.shared.errors import InvalidInput
from ingestd.shared.states import SUCCESS_OF


def _events(conn: psycopg.Connection[Any], doc_id: UUID) -> list[tuple[str, str | None]]:
    rows = conn.execute(
        "SELECT event, to_status FROM document_events WHERE document_id = %s ORDER BY id",
        (doc_id,),
    ).fetchall()
    return [(r["event"], r["to_status"]) for r in rows]


def _status(conn: psycopg.Connection[Any], doc_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, attempts, error_class FROM documents WHERE id = %s", (doc_id,)
    ).fetchone()
    assert row is not None
    return row


def _fail(conn: psycopg.Connection[Any]) -> UUID:
    (c,) = jobs.claim(conn, "w", lease_seconds=60)
    jobs.end_attempt(
        conn,
        c.id,
        owner="w",
        active_status=c.status,
        error=InvalidInput("unreadable"),
        max_attempts=5,
        retry_base=1.0,
        retry_cap=1.0,
    )
    return c.id


def _complete(conn: psycopg.Connection[Any]) -> None:
    while claimed := jobs.claim(conn, "w", lease_seconds=60):
        (c,) = claimed
        jobs.transition(conn, c.id, "w", from_status=c.status, to_status=SUCCESS_OF[c.status][0])


def test_an_ingested_document_starts_queued_with_its_event(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"first").document_id
    assert _status(conn, doc)["status"] == "queued"
    assert _events(conn, doc) == [("ingested", "queued")]
    again = ingest_bytes(b"first")
    assert (again.document_id, again.created) == (doc, False)
    assert _events(conn, doc) == [("ingested", "queued")], "a duplicate writes nothing"


def test_operator_retry_requeues_only_the_chosen_failed_documents(conn, ingest_bytes) -> None:
    first = ingest_bytes(b"one").document_id
    failed_first = _fail(conn)
    second = ingest_bytes(b"two").document_id
    failed_second = _fail(conn)
    assert (failed_first, failed_second) == (first, second)
    assert jobs.requeue_failed(conn, [first]) == 1
    assert _status(conn, first) == {"status": "queued", "attempts": 0, "error_class": None}
    assert _events(conn, first)[-1] == ("operator_retry", "queued")
    assert _status(conn, second)["status"] == "failed"
    assert jobs.requeue_failed(conn, None) == 1
    assert _status(conn, second)["status"] == "queued"
    assert jobs.requeue_failed(conn, None) == 0, "queued documents are not failed"


def test_reembed_requeues_unleased_complete_documents(conn, ingest_bytes) -> None:
    done = ingest_bytes(b"done").document_id
    _complete(conn)
    waiting = ingest_bytes(b"waiting").document_id
    assert _status(conn, done)["status"] == "complete"
    assert jobs.requeue_for_reembed(conn, {"model": "m", "dimensions": 8}) == 1
    assert _status(conn, done)["status"] == "chunked"
    assert _events(conn, done)[-1] == ("reembed", "chunked")
    assert _status(conn, waiting)["status"] == "queued"
    assert _events(conn, waiting) == [("ingested", "queued")]


def test_delete_removes_the_document_once(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"gone").document_id
    assert jobs.delete_document(conn, doc)
    assert not jobs.delete_document(conn, doc)
    assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0
