"""The statements behind groups of small documents: a claim bounded by bytes, and
one status change for many documents that still honours every lease."""

from __future__ import annotations

import pytest

from ingestd.shared.db import documents, jobs
from ingestd.shared.states import Status


def test_a_multi_document_claim_stops_at_its_byte_budget(conn, ingest_bytes) -> None:
    sizes = [400, 300, 200, 5000, 100]
    ids = []
    for i, size in enumerate(sizes):
        ids.append(ingest_bytes(bytes([65 + i]) * size).document_id)
        # Distinct due times give the claim a known order.
        conn.execute(
            "UPDATE documents SET run_after = now() - make_interval(secs => %s) WHERE id = %s",
            (100 - i, ids[-1]),
        )
    first = jobs.claim(conn, "w1", limit=10, lease_seconds=60, max_bytes=900)
    assert [c.id for c in first] == ids[:3]  # 400 + 300 + 200 fit; 5000 would not
    assert [c.size_bytes for c in first] == [400, 300, 200]
    # The first document is always taken, however large.
    second = jobs.claim(conn, "w1", limit=10, lease_seconds=60, max_bytes=900)
    assert [c.id for c in second] == [ids[3]]
    # Documents left out were not touched: still queued, unleased, no event.
    last = conn.execute(
        "SELECT status::text, lease_owner FROM documents WHERE id = %s", (ids[4],)
    ).fetchone()
    assert (last["status"], last["lease_owner"]) == ("queued", None)


def test_transition_many_moves_only_documents_still_ours(conn, ingest_bytes) -> None:
    ids = [ingest_bytes(f"doc {i}".encode()).document_id for i in range(3)]
    claimed = jobs.claim(conn, "w1", limit=3, lease_seconds=60)
    assert len(claimed) == 3
    # Another worker took the last one (its lease expired and was reclaimed).
    conn.execute("UPDATE documents SET lease_owner = 'w2' WHERE id = %s", (ids[2],))
    moved = jobs.transition_many(
        conn,
        "w1",
        from_status=Status.PARSING,
        to_status=Status.PARSED,
        changes={
            i: {"parsed_segments": n + 1, "parsed_chars": 10 * (n + 1), "pages": None}
            for n, i in enumerate(ids)
        },
        details={ids[0]: {"segments": 1}},
    )
    assert moved == set(ids[:2])
    rows = {
        r["id"]: r
        for r in conn.execute(
            "SELECT id, status::text, parsed_segments, parsed_chars, lease_owner FROM documents"
        )
    }
    assert [
        (rows[i]["status"], rows[i]["parsed_segments"], rows[i]["parsed_chars"]) for i in ids
    ] == [("parsed", 1, 10), ("parsed", 2, 20), ("parsing", 0, 0)]
    assert rows[ids[0]]["lease_owner"] is None  # not kept: the stage ended
    events = conn.execute(
        "SELECT document_id, event, from_status::text, to_status::text, worker, details"
        " FROM document_events WHERE event = 'stage_finished' ORDER BY id"
    ).fetchall()
    assert sorted(
        (e["document_id"], e["from_status"], e["to_status"], e["worker"]) for e in events
    ) == sorted((i, "parsing", "parsed", "w1") for i in ids[:2])
    assert {e["document_id"]: e["details"] for e in events} == {
        ids[0]: {"segments": 1},
        ids[1]: None,
    }


def test_transition_many_refuses_uneven_changes(conn, ingest_bytes) -> None:
    a, b = (ingest_bytes(f"x{i}".encode()).document_id for i in range(2))
    with pytest.raises(ValueError, match="sets"):
        jobs.transition_many(
            conn,
            "w1",
            from_status=Status.PARSING,
            to_status=Status.PARSED,
            changes={a: {"parsed_segments": 1}, b: {}},
        )


def test_finish_stage_going_on_changes_each_row_once(conn, ingest_bytes) -> None:
    ids = [ingest_bytes(f"doc {i}".encode()).document_id for i in range(2)]
    assert len(jobs.claim(conn, "w1", limit=2, lease_seconds=60)) == 2
    # This backend's counters not yet flushed to the shared statistics: the difference
    # across the call is how many new versions of ``documents`` rows it made.
    updates = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'documents'"
    with conn.transaction():
        before = conn.execute(updates).fetchone()["n_tup_upd"]
        moved, status = jobs.finish_stage(
            conn,
            "w1",
            from_status=Status.PARSING,
            to_status=Status.PARSED,
            changes={i: {"parsed_segments": 1} for i in ids},
            details={ids[0]: {"segments": 1}},
            go_on=True,
            lease_seconds=60,
        )
        made = conn.execute(updates).fetchone()["n_tup_upd"] - before
    # One new version of each row, not two.
    assert (moved, status, made) == (set(ids), Status.CHUNKING, len(ids))
    rows = conn.execute(
        "SELECT status::text, lease_owner, parsed_segments FROM documents ORDER BY id"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [("chunking", "w1", 1)] * 2
    # The history still passes through "parsed", each document's steps in order.
    events = conn.execute(
        "SELECT document_id, event, stage, from_status::text, to_status::text, details"
        " FROM document_events WHERE event LIKE 'stage_%' ORDER BY id"
    ).fetchall()
    by_doc = {
        i: [
            (e["event"], e["stage"], e["from_status"], e["to_status"], e["details"])
            for e in events
            if e["document_id"] == i
        ]
        for i in ids
    }
    assert by_doc[ids[0]] == [
        ("stage_finished", "parsing", "parsing", "parsed", {"segments": 1}),
        ("stage_started", "parsed", "parsed", "chunking", None),
    ]
    assert by_doc[ids[1]] == [
        ("stage_finished", "parsing", "parsing", "parsed", None),
        ("stage_started", "parsed", "parsed", "chunking", None),
    ]


def test_going_on_is_only_a_handover_under_a_kept_lease(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"x").document_id
    jobs.claim(conn, "w1", limit=1, lease_seconds=60)
    for then, keep in ((Status.PARSING, True), (Status.CHUNKING, False)):
        with pytest.raises(ValueError, match="cannot go on"):
            jobs.transition_many(
                conn,
                "w1",
                from_status=Status.PARSING,
                to_status=Status.AWAITING_PARSE if then is Status.PARSING else Status.PARSED,
                changes={doc: {}},
                keep_lease=keep,
                then=then,
            )


def test_leased_reads_only_rows_still_ours_in_the_status_asked(conn, ingest_bytes) -> None:
    ids = [ingest_bytes(f"doc {i}".encode()).document_id for i in range(3)]
    assert len(jobs.claim(conn, "w1", limit=3, lease_seconds=60)) == 3
    conn.execute("UPDATE documents SET lease_owner = 'w2' WHERE id = %s", (ids[1],))
    rows = documents.leased(conn, ids, "w1", Status.PARSING)
    assert sorted(rows) == sorted([ids[0], ids[2]])
    assert rows[ids[0]]["id"] == ids[0] and rows[ids[0]]["blob_oid"] is not None
    assert documents.leased(conn, ids, "w1", Status.CHUNKING) == {}
    assert documents.leased_statuses(conn, ids, "w1") == {
        ids[0]: Status.PARSING,
        ids[2]: Status.PARSING,
    }


def test_a_worker_session_commits_asynchronously_except_when_asked(conn) -> None:
    def setting() -> str:
        return conn.execute("SHOW synchronous_commit").fetchone()["synchronous_commit"]

    documents.relax_commits(conn)
    try:
        assert setting() == "off"
        with conn.transaction():
            documents.durable_commit(conn)
            assert setting() == "on"
        assert setting() == "off", "only for that transaction"
    finally:
        conn.execute("RESET synchronous_commit")
