"""Claiming under leases, against real PostgreSQL and real processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import psycopg
import pytest

from ingestd.shared.db import jobs
from ingestd.shared.db.connect import connect
from ingestd.shared.errors import ErrorClass, InvalidInput, LeaseLost, TransientError
from ingestd.shared.states import Status


def _claim_all(url: str, owner: str, batch: int, barrier, out) -> None:
    conn = connect(url, autocommit=True)
    barrier.wait()
    got: list[str] = []
    while True:
        claimed = jobs.claim(conn, owner, limit=batch, lease_seconds=300)
        if not claimed:
            break
        got.extend(str(c.id) for c in claimed)
    out.put((owner, got))


@pytest.mark.parametrize("batch", [1, 7])
def test_concurrent_claimers_never_share_a_document(conn, db_url, ingest_bytes, batch) -> None:
    ids = {str(ingest_bytes(f"doc {i}".encode()).document_id) for i in range(300)}
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_all, args=(db_url, f"w{i}", batch, barrier, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    all_claims = [d for got in results.values() for d in got]
    assert len(all_claims) == len(set(all_claims)), "a document was claimed twice"
    assert set(all_claims) == ids
    rows = conn.execute("SELECT status, lease_owner FROM documents").fetchall()
    assert {r["status"] for r in rows} == {"parsing"}
    assert all(r["lease_owner"] for r in rows)


def _claim_and_hang(url: str, ready) -> None:
    conn = connect(url, autocommit=True)
    claimed = jobs.claim(conn, "doomed", limit=1, lease_seconds=0.5)
    ready.put(str(claimed[0].id))
    signal.pause()


def _wait_for_claim(conn, owner: str, *, max_attempts: int = 5, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs.reap_expired(conn, max_attempts=max_attempts)
        got = jobs.claim(conn, owner, lease_seconds=60)
        if got:
            return got
        # The lease is a wall-clock deadline in the database; wait on its clock.
        conn.execute("SELECT pg_sleep(0.05)")
    raise AssertionError("document was not reclaimed")


def test_killed_claimers_document_is_reclaimed_with_attempt_counted(
    conn, db_url, ingest_bytes
) -> None:
    doc = ingest_bytes(b"victim").document_id
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    p = ctx.Process(target=_claim_and_hang, args=(db_url, ready))
    p.start()
    assert ready.get(timeout=60) == str(doc)
    os.kill(p.pid, signal.SIGKILL)
    p.join(timeout=10)

    got = _wait_for_claim(conn, "rescuer")
    assert [c.id for c in got] == [doc]
    assert got[0].attempts == 1
    assert got[0].status is Status.PARSING
    events = [
        r["event"]
        for r in conn.execute(
            "SELECT event FROM document_events WHERE document_id = %s ORDER BY id", (doc,)
        )
    ]
    assert events == ["ingested", "claimed", "lease_expired", "claimed"]


def test_poison_document_ends_dead_after_max_attempts(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"poison").document_id
    max_attempts = 3
    for attempt in range(1, max_attempts + 1):
        claimed = jobs.claim(conn, "w", lease_seconds=0.01)
        assert [c.id for c in claimed] == [doc], f"attempt {attempt}"
        conn.execute("SELECT pg_sleep(0.02)")  # let the 10 ms lease lapse on the DB clock
        jobs.reap_expired(conn, max_attempts=max_attempts)
    row = conn.execute(
        "SELECT status, attempts, error_class FROM documents WHERE id = %s", (doc,)
    ).fetchone()
    assert row["status"] == "dead"
    assert row["attempts"] == max_attempts
    assert row["error_class"] == "lease_expired"
    assert jobs.claim(conn, "w", lease_seconds=60) == []


def test_transient_error_retries_with_backoff_then_dead(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"flaky").document_id
    for attempt in (1, 2):
        (c,) = jobs.claim(conn, "w", lease_seconds=60)
        out = jobs.end_attempt(
            conn,
            doc,
            owner="w",
            active_status=c.status,
            error=TransientError("upstream 503"),
            max_attempts=3,
            retry_base=10,
            retry_cap=100,
        )
        assert out.status is Status.QUEUED and out.attempts == attempt
        assert jobs.claim(conn, "w", lease_seconds=60) == []  # not due yet
        conn.execute("UPDATE documents SET run_after = now() WHERE id = %s", (doc,))
    (c,) = jobs.claim(conn, "w", lease_seconds=60)
    out = jobs.end_attempt(
        conn,
        doc,
        owner="w",
        active_status=c.status,
        error=TransientError("upstream 503"),
        max_attempts=3,
        retry_base=10,
        retry_cap=100,
    )
    assert out.status is Status.DEAD
    row = conn.execute(
        "SELECT error_class, error_message FROM documents WHERE id = %s", (doc,)
    ).fetchone()
    assert (row["error_class"], row["error_message"]) == ("transient", "upstream 503")


def test_retry_is_scheduled_in_the_future(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"later").document_id
    (c,) = jobs.claim(conn, "w", lease_seconds=60)
    out = jobs.end_attempt(
        conn,
        doc,
        owner="w",
        active_status=c.status,
        error=TransientError("x", retry_after=30),
        max_attempts=5,
        retry_base=1,
        retry_cap=60,
    )
    row = conn.execute(
        "SELECT run_after - now() > interval '29 seconds' AS later FROM documents WHERE id = %s",
        (doc,),
    ).fetchone()
    assert row["later"], "retry-after from the server is honoured"
    assert jobs.claim(conn, "w", lease_seconds=60) == []
    assert out.status is Status.QUEUED


def test_permanent_error_fails_at_once(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"bad").document_id
    (c,) = jobs.claim(conn, "w", lease_seconds=60)
    out = jobs.end_attempt(
        conn,
        doc,
        owner="w",
        active_status=c.status,
        error=InvalidInput("not valid UTF-8 at byte offset 3"),
        max_attempts=5,
        retry_base=1,
        retry_cap=60,
    )
    assert out.status is Status.FAILED
    history = conn.execute(
        "SELECT event, error_class, message FROM document_events WHERE document_id = %s"
        " ORDER BY id",
        (doc,),
    ).fetchall()
    assert history[-1] == {
        "event": "failed",
        "error_class": "invalid_input",
        "message": "not valid UTF-8 at byte offset 3",
    }


def test_open_circuit_costs_no_attempt(conn, ingest_bytes) -> None:
    from ingestd.shared.errors import CircuitOpen

    doc = ingest_bytes(b"breaker").document_id
    (c,) = jobs.claim(conn, "w", lease_seconds=60)
    out = jobs.end_attempt(
        conn,
        doc,
        owner="w",
        active_status=c.status,
        error=CircuitOpen("openai circuit open", retry_after=5),
        max_attempts=1,
        retry_base=1,
        retry_cap=60,
    )
    assert out.status is Status.QUEUED and out.attempts == 0
    assert ErrorClass.CIRCUIT_OPEN.retryable


def test_stale_worker_cannot_write_after_losing_its_lease(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"stolen").document_id
    (c,) = jobs.claim(conn, "old", lease_seconds=0.01)
    conn.execute("SELECT pg_sleep(0.02)")
    jobs.reap_expired(conn, max_attempts=5)
    (c2,) = jobs.claim(conn, "new", lease_seconds=60)
    assert c2.id == doc
    with pytest.raises(LeaseLost), conn.transaction():
        jobs.transition(conn, doc, "old", from_status=c.status, to_status=Status.PARSED)
    with pytest.raises(LeaseLost):
        jobs.extend_lease(conn, doc, "old", lease_seconds=60)
    jobs.extend_lease(conn, doc, "new", lease_seconds=60)


def test_supervisor_release_requeues_at_once_with_reason(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"crashed").document_id
    jobs.claim(conn, "host:1:0", lease_seconds=600)
    released = jobs.release_worker_leases(
        conn,
        "host:1:0",
        error_class=ErrorClass.MEMORY,
        message="worker passed its hard memory ceiling",
        max_attempts=5,
        retry_base=0.01,
        retry_cap=0.01,
    )
    assert [d for d, _ in released] == [doc]
    row = conn.execute(
        "SELECT status, attempts, error_class, lease_owner FROM documents WHERE id = %s", (doc,)
    ).fetchone()
    assert row == {"status": "queued", "attempts": 1, "error_class": "memory", "lease_owner": None}


def test_notify_wakes_a_listener(conn, db_url, ingest_bytes) -> None:
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute("LISTEN ingestd_work")
    ingest_bytes(b"wake up")
    got = list(listener.notifies(timeout=10, stop_after=1))
    assert [n.channel for n in got] == ["ingestd_work"]
    listener.close()
