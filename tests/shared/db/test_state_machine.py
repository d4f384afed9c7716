"""The state table in code and its mirror in PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from ingestd.shared.states import ACTIVE_OF, RESTING_OF, TERMINAL, TRANSITIONS, Status, is_legal


def test_database_mirrors_code_table(conn: psycopg.Connection) -> None:
    rows = conn.execute("SELECT from_status, to_status FROM document_transitions").fetchall()
    in_db = {(Status(r["from_status"]), Status(r["to_status"])) for r in rows}
    assert in_db == set(TRANSITIONS)


def test_terminal_statuses_only_leave_by_operator_action() -> None:
    for src, dst in TRANSITIONS:
        if src in (Status.FAILED, Status.DEAD):
            assert dst is Status.QUEUED
    assert not is_legal(Status.COMPLETE, Status.FAILED)


def test_every_active_status_has_a_way_back_and_forward() -> None:
    for resting, active in ACTIVE_OF.items():
        assert is_legal(resting, active)
        assert RESTING_OF[active] in ACTIVE_OF
    assert {Status.COMPLETE, Status.FAILED, Status.DEAD} == TERMINAL


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (Status.QUEUED, Status.COMPLETE),
        (Status.QUEUED, Status.EMBEDDING),
        (Status.PARSED, Status.EMBEDDED),
        (Status.COMPLETE, Status.FAILED),
        (Status.DEAD, Status.COMPLETE),
    ],
)
def test_illegal_transition_is_refused_by_postgres(conn, ingest_bytes, src, dst) -> None:
    doc = ingest_bytes(f"illegal {src} {dst}".encode()).document_id
    # Reach ``src`` through legal steps, bypassing nothing.
    path = {
        Status.QUEUED: [],
        Status.PARSED: [Status.PARSING, Status.PARSED],
        Status.COMPLETE: [
            Status.PARSING,
            Status.PARSED,
            Status.CHUNKING,
            Status.CHUNKED,
            Status.EMBEDDING,
            Status.EMBEDDED,
            Status.FINALIZING,
            Status.COMPLETE,
        ],
        Status.DEAD: [Status.DEAD],
    }[src]
    for step in path:
        conn.execute("UPDATE documents SET status = %s WHERE id = %s", (str(step), doc))
    with pytest.raises(psycopg.errors.CheckViolation, match="illegal document transition"):
        conn.execute("UPDATE documents SET status = %s WHERE id = %s", (str(dst), doc))
    row = conn.execute("SELECT status FROM documents WHERE id = %s", (doc,)).fetchone()
    assert row["status"] == str(src)


def test_legal_transition_is_accepted(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"legal").document_id
    conn.execute("UPDATE documents SET status = 'parsing' WHERE id = %s", (doc,))
    conn.execute("UPDATE documents SET status = 'failed' WHERE id = %s", (doc,))
    row = conn.execute("SELECT status FROM documents WHERE id = %s", (doc,)).fetchone()
    assert row["status"] == "failed"


def test_a_handover_passes_through_a_resting_status_it_could_rest_in() -> None:
    from ingestd.shared.states import HANDOVER, SUCCESS_OF

    for active, nxt in HANDOVER:
        assert active.active and nxt.active
        (rest,) = [r for r in SUCCESS_OF[active] if ACTIVE_OF.get(r) is nxt]
        assert is_legal(active, rest) and is_legal(rest, nxt)
    assert (Status.PARSING, Status.PARSING) not in HANDOVER  # never through awaiting_parse
    assert (Status.PARSING, Status.CHUNKING) in HANDOVER


def test_a_document_is_born_queued_and_nothing_else(conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="created queued, not complete"):
        conn.execute(
            "INSERT INTO documents (id, source, filename, mime_type, size_bytes, content_sha256,"
            " correlation_id, status) SELECT gen_random_uuid(), 'test://x', 'x.txt',"
            " 'text/plain', 1, md5('x'), gen_random_uuid(), 'complete'"
        )
    assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0


def test_complete_is_refused_while_a_chunk_has_no_vector(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"one chunk without its vector").document_id
    for step in ("parsing", "parsed", "chunking", "chunked", "embedding", "embedded"):
        conn.execute("UPDATE documents SET status = %s WHERE id = %s", (step, doc))
    conn.execute(
        "UPDATE documents SET chunker = 'c', chunker_version = 1, status = 'finalizing'"
        " WHERE id = %s",
        (doc,),
    )
    conn.execute(
        "INSERT INTO chunks (document_id, chunker, chunker_version, ordinal, text, token_count)"
        " VALUES (%s, 'c', 1, 0, 'text', 1)",
        (doc,),
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="a chunk has no vector"):
        conn.execute("UPDATE documents SET status = 'complete' WHERE id = %s", (doc,))

    conn.execute(
        "UPDATE chunks SET embedding = '[1,0,0]', embedding_model = 'm' WHERE document_id = %s",
        (doc,),
    )
    conn.execute("UPDATE documents SET status = 'complete' WHERE id = %s", (doc,))
    row = conn.execute("SELECT status FROM documents WHERE id = %s", (doc,)).fetchone()
    assert row["status"] == "complete"
