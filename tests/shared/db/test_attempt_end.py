"""The one rule for how a failed attempt ends, in Python and in SQL, and its callers."""

from __future__ import annotations

import math
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ingestd.shared.db import jobs
from ingestd.shared.db.attempts import (
    SQL_FUNCTION,
    Clock,
    Ending,
    clock,
    decide,
    ending,
    next_try_within,
)
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


def test_waiting_on_a_service_ends_dead_at_the_horizon_only() -> None:
    before = decide(ErrorClass.CIRCUIT_OPEN, 2, 5, waiting_for=59.0, horizon=60.0)
    assert (before.ending, before.attempts, before.waiting) == (Ending.RETRY, 2, True)
    past = decide(ErrorClass.CIRCUIT_OPEN, 2, 5, waiting_for=60.0, horizon=60.0)
    assert (past.ending, past.attempts, past.waited_out) == (Ending.DEAD, 2, True)
    # Its first wait starts the clock: never dead on it, whatever the horizon.
    assert decide(ErrorClass.CIRCUIT_OPEN, 0, 5, horizon=0.001).ending is Ending.RETRY
    # Only an unavailable service's class waits: the clock means nothing to the others.
    for cls in (ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED):
        decision = decide(cls, 0, 5, waiting_for=1e9, horizon=60.0)
        assert (decision.ending, decision.waited_out) == (Ending.RETRY, False)


def test_the_clock_starts_on_a_wait_clears_on_a_counted_attempt_and_ignores_a_429() -> None:
    assert clock(ErrorClass.CIRCUIT_OPEN) is Clock.START
    assert clock(ErrorClass.TRANSIENT) is Clock.CLEAR
    assert clock(ErrorClass.LEASE_EXPIRED) is Clock.CLEAR
    assert clock(ErrorClass.RATE_LIMITED) is Clock.KEEP


@given(
    waited=st.floats(min_value=0, max_value=1e5),
    horizon=st.floats(min_value=0.001, max_value=1e5),
    delay=st.floats(min_value=0, max_value=1e5),
)
def test_a_waiting_retry_is_never_scheduled_past_its_horizon(
    waited: float, horizon: float, delay: float
) -> None:
    decision = decide(ErrorClass.CIRCUIT_OPEN, 0, 5, waiting_for=waited, horizon=horizon)
    got = next_try_within(decision, delay)
    assert 0 <= got <= delay
    if decision.ending is Ending.RETRY:
        assert waited + got <= horizon + 1e-9
    transient = decide(ErrorClass.TRANSIENT, 0, 5, waiting_for=waited, horizon=horizon)
    assert next_try_within(transient, delay) == delay


def _sql_ending(
    conn: psycopg.Connection[Any],
    retryable: bool,
    attempts: int,
    budget: int,
    waited: float,
    horizon: float,
) -> str:
    row = conn.execute(
        f"SELECT {SQL_FUNCTION}(%s, %s::int, %s::int, %s::float8, %s::float8) AS ending",
        (retryable, attempts, budget, waited, horizon),
    ).fetchone()
    assert row is not None
    return str(row["ending"])


def test_python_and_sql_rules_agree_on_every_input(db_url: str) -> None:
    with connect(db_url, autocommit=True, application_name="ingestd-test") as conn:

        @given(
            error_class=st.sampled_from(list(ErrorClass)),
            attempts_before=st.integers(min_value=0, max_value=50),
            max_attempts=st.integers(min_value=1, max_value=50),
            waiting_for=st.none() | st.floats(min_value=0, max_value=1e6),
            horizon=st.floats(min_value=0.001, max_value=1e6) | st.just(math.inf),
        )
        @hsettings(max_examples=400, deadline=None, database=None)
        def agree(
            error_class: ErrorClass,
            attempts_before: int,
            max_attempts: int,
            waiting_for: float | None,
            horizon: float,
        ) -> None:
            decision = decide(
                error_class, attempts_before, max_attempts, waiting_for=waiting_for, horizon=horizon
            )
            in_sql = _sql_ending(
                conn,
                error_class.retryable,
                decision.attempts,
                max_attempts,
                decision.waited,
                horizon,
            )
            assert in_sql == str(decision.ending)
            assert decision.ending is ending(
                error_class.retryable, decision.attempts, max_attempts, decision.waited, horizon
            )

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
