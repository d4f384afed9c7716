"""How the supervisor handles workers that die, hang, bloat or crash-loop (real processes)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import psycopg

from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_CRASH_LOOP, EXIT_OK
from tests.supervisor.arbiter_support import ArbiterRun, wait_until

Start = Callable[..., ArbiterRun]


def document(conn: psycopg.Connection[Any], doc_id: Any) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, attempts, error_class, error_message, lease_owner FROM documents"
        " WHERE id = %s",
        (doc_id,),
    ).fetchone()
    assert row is not None
    return row


def failure_events(conn: psycopg.Connection[Any], doc_id: Any) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT event, worker, error_class, message, attempt FROM document_events"
        " WHERE document_id = %s AND error_class IS NOT NULL ORDER BY id",
        (doc_id,),
    ).fetchall()


def holding(run: ArbiterRun, doc_id: Any, slot: int = 0, not_pid: int = 0) -> dict[str, Any]:
    workers = run.wait_workers(
        lambda ws: any(
            w["slot"] == slot and w["document_id"] == doc_id and w["pid"] != not_pid for w in ws
        ),
        f"worker {slot} holding {doc_id}",
    )
    return next(w for w in workers if w["slot"] == slot)


def test_sigkilled_worker_is_replaced_and_its_document_released_at_once(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a document", "a.txt").document_id
    run = start_arbiter("holder", lease_seconds=600.0)  # only the supervisor can release it
    first = holding(run, doc)

    os.kill(first["pid"], signal.SIGKILL)

    events = wait_until(lambda: failure_events(conn, doc), "the document released")
    assert events[0]["event"] == "retry_scheduled"
    assert events[0]["error_class"] == "crash"
    assert events[0]["worker"] == first["owner"]
    assert events[0]["attempt"] == 1
    assert "SIGKILL" in events[0]["message"]
    exited = run.wait_event("worker exited", reason="crash")[0]
    assert exited["signal"] == "SIGKILL" and exited["worker_pid"] == first["pid"]
    # The replacement (a new process, a new lease owner) takes the document again.
    second = holding(run, doc, not_pid=first["pid"])
    assert second["owner"] != first["owner"]
    assert document(conn, doc)["attempts"] == 1
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_silent_worker_is_killed_and_replaced(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a document", "a.txt").document_id
    # "mute" claims, beats once, then hangs and ignores SIGTERM: SIGKILL after the grace.
    run = start_arbiter("mute", heartbeat_timeout_seconds=0.5, lease_seconds=600.0)

    killing = run.wait_event("killing worker", reason="heartbeat")[0]
    # INT, not TERM: a real worker takes TERM for a planned stop and would give its
    # document back uncharged.
    assert killing["signal"] == "SIGINT"
    exited = run.wait_event("worker exited", reason="heartbeat")[0]
    assert exited["signal"] == "SIGKILL"  # it ignored the INT
    assert exited["document_id"] == str(doc)
    events = wait_until(lambda: failure_events(conn, doc), "the document released")
    assert events[0]["error_class"] == "crash"
    assert "no heartbeat" in events[0]["message"]
    started = run.wait_event("worker started", count=2)
    assert started[1]["worker_pid"] != started[0]["worker_pid"]
    run.send(signal.SIGINT)
    assert run.wait_exit() == EXIT_OK


def test_stage_past_its_deadline_is_killed_with_reason_deadline(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a document", "a.txt").document_id
    # "stuck" heartbeats fine but never leaves its stage, and ignores SIGINT.
    run = start_arbiter(
        "stuck", stage_deadline_seconds=0.5, heartbeat_timeout_seconds=1.0, lease_seconds=600.0
    )

    killing = run.wait_event("killing worker", reason="deadline")[0]
    assert killing["signal"] == "SIGINT" and killing["document_id"] == str(doc)
    exited = run.wait_event("worker exited", reason="deadline")[0]
    assert exited["signal"] == "SIGKILL"
    events = wait_until(lambda: failure_events(conn, doc), "the document released")
    assert events[0]["error_class"] == "deadline"
    assert "deadline" in events[0]["message"]
    run.send(signal.SIGINT)
    assert run.wait_exit() == EXIT_OK


def test_soft_memory_ceiling_recycles_the_worker(start_arbiter: Start) -> None:
    run = start_arbiter(
        "hog", env={"FAKE_ALLOC_MB": "96"}, memory_soft_mb=48, memory_hard_mb=1024, memory_strikes=3
    )

    warning = run.wait_event("worker over the soft memory ceiling: recycling after its batch")[0]
    assert warning["strikes"] == 3
    assert warning["uss_mb"] > 48
    exited = run.wait_event("worker exited", reason="recycle")[0]
    assert exited["exit_code"] == EXIT_OK  # it finished its batch and left on its own
    run.wait_event("worker started", count=2)  # replaced at once, no backoff
    assert not run.events("restart scheduled")
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_hard_memory_ceiling_kills_at_once(start_arbiter: Start) -> None:
    run = start_arbiter(
        "hog",
        env={"FAKE_ALLOC_MB": "160"},
        memory_soft_mb=48,
        memory_hard_mb=96,
        memory_strikes=100,
    )

    killing = run.wait_event("killing worker", reason="memory")[0]
    assert killing["signal"] == "SIGKILL"
    assert "hard ceiling" in killing["detail"]
    exited = run.wait_event("worker exited", reason="memory")[0]
    assert exited["signal"] == "SIGKILL" and exited["uss_mb"] > 96
    run.wait_event("worker started", count=2)
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_document_that_blows_every_worker_up_ends_dead_with_reason_memory(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a poisonous document", "poison.txt").document_id
    run = start_arbiter(
        "poison",
        workers=2,
        env={"FAKE_ALLOC_MB": "160"},
        memory_soft_mb=48,
        memory_hard_mb=96,
        max_attempts=3,
        lease_seconds=600.0,
    )

    wait_until(
        lambda: document(conn, doc)["status"] == "dead",
        "the document dead",
        on_timeout=run.log_tail,
    )
    row = document(conn, doc)
    assert row["error_class"] == "memory" and row["attempts"] == 3
    assert row["lease_owner"] is None
    events = failure_events(conn, doc)
    assert [e["error_class"] for e in events] == ["memory"] * 3
    assert [e["event"] for e in events] == ["retry_scheduled", "retry_scheduled", "dead"]
    assert len({e["worker"] for e in events}) == 3  # three different worker processes
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_crash_loop_backs_off_exponentially_then_gives_up(start_arbiter: Start) -> None:
    run = start_arbiter(
        "crash_at_start",
        restart_backoff_base_seconds=0.05,
        restart_backoff_max_seconds=0.2,
        crash_loop_limit=5,
        crash_loop_window_seconds=30.0,
    )

    assert run.wait_exit() == EXIT_CRASH_LOOP
    delays = [e["delay_seconds"] for e in run.events("restart scheduled")]
    assert delays == [0.05, 0.1, 0.2, 0.2]
    assert len(run.events("worker started")) == 5
    crashes = run.events("worker exited", reason="crash")
    assert len(crashes) == 5 and all(e["exit_code"] == EXIT_CRASH for e in crashes)
    giving_up = run.events("crash loop: giving up")
    assert giving_up and giving_up[0]["rapid_failures"] == 5


def test_configuration_error_in_a_worker_stops_the_supervisor(start_arbiter: Start) -> None:
    run = start_arbiter("config_error", workers=2)

    assert run.wait_exit() == EXIT_CONFIG
    assert not run.events("restart scheduled")
    assert len(run.events("worker started")) == 2  # the first two; nobody respawned
    assert run.events("worker exited", reason="config")


def test_deaths_charged_to_a_document_are_not_a_crash_loop(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a bomb", "bomb.txt").document_id
    # Five deaths on one document, against a crash-loop limit of three.
    run = start_arbiter("bomb_victim", crash_loop_limit=3, max_attempts=5, lease_seconds=600.0)

    wait_until(
        lambda: document(conn, doc)["status"] == "dead",
        "the document dead",
        on_timeout=run.log_tail,
    )
    row = document(conn, doc)
    assert row["error_class"] == "crash" and row["attempts"] == 5
    crashes = run.wait_event("worker exited", count=5, reason="crash")
    assert [e["document_id"] for e in crashes] == [str(doc)] * 5
    scheduled = run.wait_event("restart scheduled", count=5)
    assert [e["charged_to_document"] for e in scheduled] == [str(doc)] * 5
    assert all(e["rapid_failures"] == 0 for e in scheduled)
    assert [e["streak"] for e in scheduled] == [1, 2, 3, 4, 5]  # the slot still backs off
    # The sixth worker finds nothing to claim and stays up: the supervisor still runs.
    run.wait_event("worker started", count=6)
    run.wait_workers(lambda ws: len(ws) == 1 and ws[0]["document_id"] is None, "an idle worker")
    assert not run.events("crash loop: giving up")
    assert run.proc.poll() is None
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_idle_deaths_still_make_a_crash_loop(start_arbiter: Start) -> None:
    run = start_arbiter("idle_crash", crash_loop_limit=3)

    assert run.wait_exit() == EXIT_CRASH_LOOP
    crashes = run.events("worker exited", reason="crash")
    assert len(crashes) == 3 and all(e["document_id"] is None for e in crashes)
    assert [e["charged_to_document"] for e in run.events("restart scheduled")] == [None] * 2
    assert run.events("crash loop: giving up")[0]["rapid_failures"] == 3
