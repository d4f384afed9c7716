"""The one rule for how a failed attempt ends, in Python and in SQL, and its callers."""

from __future__ import annotations

from typing import Any

import psycopg
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ingestd.shared.db import jobs
from ingestd.shared.db.attempts import SQL_FUNCTION, Ending, decide, ending
from ingestd.shared.db.connect import connect
from ingestd.shared.errors import ErrorClass, IngestError
from ingestd.shared.states import Status


def test_a_permanent_class_fails_whatever_the_budget() -> None:
    assert decide(ErrorClass.INVALID_INPUT, 0, 5).ending is Ending.FAILED
    assert decide(ErrorClass.AUTH, 10, 5).ending is Ending.FAILED


def test_a_retryable_class_retries_until_its_attempt_spends_the_budget() -> None:
    assert decide(ErrorClass.TRANSIENT, 3, 5) == decide(ErrorClass.TRANSIENT, 3, 5)
    assert decide(ErrorClass.TRANSIENT, 3, 5).ending is Ending.RETRY
    last = decide(ErrorClass.TRANSIENT, 4, 5)
    assert (last.ending, last.attempts) == (Ending.DEAD, 5)


def test_a_rate_limit_costs_no_attempt_so_never_kills() -> None:
    decision = decide(ErrorClass.RATE_LIMITED, 4, 5)
    assert (decision.ending, decision.attempts) == (Ending.RETRY, 4)


def _sql_ending(conn: psycopg.Connection[Any], retryable: bool, attempts: int, budget: int) -> str:
    row = conn.execute(
        f"SELECT {SQL_FUNCTION}(%s, %s, %s) AS ending", (retryable, attempts, budget)
    ).fetchone()
    assert row is not None
    return str(row["ending"])


def test_python_and_sql_rules_agree_on_every_input(db_url: str) -> None:
    with connect(db_url, autocommit=True, application_name="ingestd-test") as conn:

        @given(
            error_class=st.sampled_from(list(ErrorClass)),
            attempts_before=st.integers(min_value=0, max_value=50),
            max_attempts=st.integers(min_value=1, max_value=50),
        )
        @hsettings(max_examples=400, deadline=None, database=None)
        def agree(error_class: ErrorClass, attempts_before: int, max_attempts: int) -> None:
            decision = decide(error_class, attempts_before, max_attempts)
            in_sql = _sql_ending(conn, error_class.retryable, decision.attempts, max_attempts)
            assert in_sql == str(decision.ending)
            assert decision.ending is ending(error_class.retryable, decision.attempts, max_attempts)

        agree()


def test_the_reaper_kills_by_the_same_rule_as_the_worker(conn, ingest_bytes) -> None:
    """One document's lease expires on its last attempt (reaped: dead); another's
    worker reports the same error class at the same count (ended: dead)."""
    reaped = ingest_bytes(b"reaped").document_id
    ended = ingest_bytes(b"ended").document_id
    conn.execute("UPDATE documents SET attempts = 2")
    got = {c.id: c for c in jobs.claim(conn, "w", limit=2, lease_seconds=60)}
    assert set(got) == {reaped, ended}
    conn.execute(
        "UPDATE documents SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (reaped,),
    )
    assert jobs.reap_expired(conn, max_attempts=3) == 1
    outcome = jobs.end_attempt(
        conn,
        ended,
        owner="w",
        active_status=Status.PARSING,
        error=IngestError("lease gone", error_class=ErrorClass.LEASE_EXPIRED),
        max_attempts=3,
        retry_base=0.01,
        retry_cap=0.01,
    )
    row = conn.execute("SELECT status, attempts FROM documents WHERE id = %s", (reaped,)).fetchone()
    assert (row["status"], row["attempts"]) == (outcome.status, outcome.attempts)
    assert outcome.status is Status.DEAD
