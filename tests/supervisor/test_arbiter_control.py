"""Operating the supervisor: stopping, scaling, reloading, recycling, draining, profiling,
and what it publishes (real processes, real signals, real database)."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_OK
from ingestd.shared.settings import load_settings
from ingestd.supervisor import control
from tests.supervisor.arbiter_support import TIMEOUT, ArbiterRun, wait_until

Start = Callable[..., ArbiterRun]


def leased(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM documents WHERE lease_owner IS NOT NULL"
    ).fetchone()
    return int(row["n"]) if row else 0


def supervisor_rows(conn: psycopg.Connection[Any], run: ArbiterRun) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT state, details FROM supervisor_status WHERE supervisor = %s", (run.supervisor,)
    ).fetchall()


def test_term_drains_then_exits_0_leaving_no_process_lease_or_row(
    start_arbiter: Start,
    conn: psycopg.Connection[Any],
    ingest_bytes: Callable[..., Any],
    cli_env: dict[str, str],
) -> None:
    docs = {ingest_bytes(f"document {i}".encode(), f"{i}.txt").document_id for i in range(2)}
    run = start_arbiter("holder", workers=2)
    workers = run.wait_workers(
        lambda ws: {w["document_id"] for w in ws} == docs, "both workers holding a document"
    )
    procs = [psutil.Process(w["pid"]) for w in workers]
    state = wait_until(lambda: supervisor_rows(conn, run), "the supervisor's status row")[0]
    assert state["state"] == "running" and state["details"]["workers_target"] == 2
    assert (Path(cli_env["INGESTD_HOME"]) / "supervisor.pid").read_text().strip() == str(run.pid)

    run.send(signal.SIGTERM)

    assert run.wait_exit() == EXIT_OK
    assert not any(p.is_running() for p in procs)
    assert leased(conn) == 0
    rows = conn.execute("SELECT status, attempts FROM documents").fetchall()
    assert [(r["status"], r["attempts"]) for r in rows] == [("queued", 0)] * 2
    assert run.workers() == [] and supervisor_rows(conn, run) == []
    assert not (Path(cli_env["INGESTD_HOME"]) / "supervisor.pid").exists()
    assert [e["reason"] for e in run.events("worker exited")] == ["shutdown"] * 2


def test_term_kills_a_worker_that_outlives_the_drain_timeout(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a document", "a.txt").document_id
    run = start_arbiter("stubborn", drain_timeout_seconds=0.5)  # ignores SIGTERM
    run.wait_workers(lambda ws: bool(ws) and ws[0]["document_id"] == doc, "a held document")
    pid = run.workers()[0]["pid"]

    run.send(signal.SIGTERM)

    assert run.wait_exit() == EXIT_OK
    exited = run.events("worker exited")[0]
    assert exited["reason"] == "shutdown" and exited["signal"] == "SIGKILL"
    assert not psutil.pid_exists(pid)
    # Our stop, not the document's fault: given back without spending an attempt.
    row = conn.execute("SELECT status, attempts, lease_owner FROM documents").fetchone()
    assert row == {"status": "queued", "attempts": 0, "lease_owner": None}


def test_int_stops_fast_and_releases_what_the_workers_held(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"a document", "a.txt").document_id
    run = start_arbiter("holder")  # on SIGINT it exits at once, lease still held
    run.wait_workers(lambda ws: bool(ws) and ws[0]["document_id"] == doc, "a held document")

    run.send(signal.SIGINT)

    assert run.wait_exit() == EXIT_OK
    assert leased(conn) == 0
    row = conn.execute("SELECT status, attempts FROM documents").fetchone()
    assert row == {"status": "queued", "attempts": 0}
    released = conn.execute(
        "SELECT message FROM document_events WHERE event = 'released'"
    ).fetchall()
    assert released and "stopped (shutdown)" in released[0]["message"]


def test_ttin_and_ttou_change_the_worker_count(start_arbiter: Start) -> None:
    run = start_arbiter("idle", workers=1)
    run.wait_workers(lambda ws: [w["slot"] for w in ws] == [0], "one worker")

    run.send(signal.SIGTTIN)
    run.wait_workers(lambda ws: [w["slot"] for w in ws] == [0, 1], "two workers")
    run.send(signal.SIGTTIN)
    run.wait_workers(lambda ws: [w["slot"] for w in ws] == [0, 1, 2], "three workers")
    run.send(signal.SIGTTOU)
    run.wait_workers(lambda ws: [w["slot"] for w in ws] == [0, 1], "two workers again")

    exited = run.wait_event("worker exited", reason="scale_down")[0]
    assert exited["worker_slot"] == 2 and exited["exit_code"] == EXIT_OK
    assert len(run.events("worker started")) == 3  # nobody replaced the scaled-down one
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_hup_reloads_the_configuration_and_replaces_workers(
    start_arbiter: Start, tmp_path: Path
) -> None:
    config = tmp_path / "ingestd.toml"
    config.write_text("workers = 1\n")
    run = start_arbiter("idle", config=config, workers=None)
    first = run.wait_workers(lambda ws: len(ws) == 1, "one worker")[0]

    config.write_text("workers = 2\n")
    run.send(signal.SIGHUP)

    workers = run.wait_workers(
        lambda ws: len(ws) == 2 and first["pid"] not in {w["pid"] for w in ws},
        "two workers, the old one replaced",
    )
    assert [w["slot"] for w in workers] == [0, 1]
    run.wait_event("reload finished")
    exited = run.events("worker exited")
    assert [(e["reason"], e["worker_pid"]) for e in exited] == [("reload", first["pid"])]

    config.write_text("workers = 'many'\n")  # a broken file is refused; nothing changes
    run.send(signal.SIGHUP)
    run.wait_event("reload failed; keeping the running configuration")
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK
    assert len(run.events("worker exited", reason="reload")) == 1


def test_worker_is_recycled_after_n_documents(start_arbiter: Start) -> None:
    run = start_arbiter("counter", recycle_after_documents=5, recycle_jitter=0.0)

    recycling = run.wait_event("recycling worker")[0]
    assert recycling["why"].startswith(("5 ", "6 "))
    exited = run.wait_event("worker exited", reason="recycle")[0]
    assert exited["exit_code"] == EXIT_OK
    run.wait_event("worker started", count=2)
    assert not run.events("restart scheduled")
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_worker_is_recycled_after_t_seconds(start_arbiter: Start) -> None:
    run = start_arbiter("idle", recycle_after_seconds=0.3, recycle_jitter=0.5)

    recycling = run.wait_event("recycling worker", count=2)
    assert all(e["why"].endswith("s old") for e in recycling)
    assert len(run.events("worker exited", reason="recycle")) >= 1
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_drain_mode_exits_0_once_everything_is_terminal(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    for i in range(3):
        ingest_bytes(f"document {i}".encode(), f"{i}.txt")
    # Parked until its parser calls back: not waited for. Born queued, then parked
    # through the legal steps (the database refuses a row born in any other status).
    parked = ingest_bytes(b"parked", "parked.pdf").document_id
    for status in ("parsing", "awaiting_parse"):
        conn.execute(
            "UPDATE documents SET status = %s, run_after = now() + interval '1 hour' WHERE id = %s",
            (status, parked),
        )
    run = start_arbiter("pipeline", workers=2, drain=True)

    assert run.wait_exit() == EXIT_OK
    rows = conn.execute(
        "SELECT status, count(*) AS n FROM documents GROUP BY status ORDER BY status"
    ).fetchall()
    assert {r["status"]: r["n"] for r in rows} == {"awaiting_parse": 1, "complete": 3}
    assert run.events("drain finished: nothing runnable or in flight")


def test_profile_request_reaches_the_worker_in_that_slot(
    start_arbiter: Start, cli_env: dict[str, str]
) -> None:
    settings = load_settings(environ=cli_env)
    with pytest.raises(control.ControlError, match="no running ingestd supervisor"):
        control.request_profile(settings, slot=0)
    run = start_arbiter("profiler", workers=2)
    run.wait_workers(lambda ws: len(ws) == 2, "two workers")

    path = control.request_profile(settings, slot=1)

    assert path.parent == settings.home / "profiles"
    wait_until(path.exists, f"the worker to write {path}", on_timeout=run.log_tail)
    assert path.read_text() == "fake capture by worker 1\n"
    forwarded = run.wait_event("profile requested")[0]
    assert forwarded["worker_slot"] == 1 and forwarded["path"] == str(path)
    with pytest.raises(control.ControlError, match="no worker in slot 7"):
        control.request_profile(settings, slot=7)
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_real_workers_drain_a_document_to_complete(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    doc = ingest_bytes(b"The supervisor forks real workers. " * 40, "real.txt").document_id
    run = start_arbiter("real", workers=2, drain=True, heartbeat_timeout_seconds=30.0)

    assert run.wait_exit(timeout=120) == EXIT_OK
    row = conn.execute("SELECT status, lease_owner FROM documents WHERE id = %s", (doc,)).fetchone()
    assert row == {"status": "complete", "lease_owner": None}
    assert all(e["reason"] == "shutdown" for e in run.events("worker exited"))


def test_http_child_is_supervised_and_stopped_after_the_workers(start_arbiter: Start) -> None:
    run = start_arbiter("idle", http="http_idle")
    first = run.wait_event("http child started")[0]

    os.kill(first["worker_pid"], signal.SIGKILL)

    exited = run.wait_event("http child exited")[0]
    assert exited["reason"] == "crash" and exited["signal"] == "SIGKILL"
    run.wait_event("http child started", count=2)
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK
    order = [e["event"] for e in run.events() if e["event"].endswith(" exited")]
    # /v1/status keeps answering while the workers drain.
    assert order[-3:] == ["worker exited", "http child exited", "supervisor exited"]


def test_systemd_hears_ready_status_watchdog_and_stopping(start_arbiter: Start) -> None:
    name = f"ingestd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(TIMEOUT)  # safety net: datagrams arrive as soon as they are sent
    seen: list[str] = []
    unread: list[str] = []
    deadline = time.monotonic() + TIMEOUT

    def until(prefix: str) -> str:
        while time.monotonic() < deadline:
            if not unread:
                unread.extend(sock.recv(4096).decode().splitlines())
            line = unread.pop(0)
            seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix} from the supervisor; got {seen}")

    try:
        run = start_arbiter(
            "idle", workers=2, env={"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "2000000"}
        )
        until("READY=1")
        assert until("STATUS=").startswith("STATUS=2/2 workers")
        until("WATCHDOG=1")
        run.send(signal.SIGTERM)
        until("STOPPING=1")
        assert run.wait_exit() == EXIT_OK
    finally:
        sock.close()
    assert seen.index("READY=1") < seen.index("STOPPING=1")


def test_usr1_reopens_the_log_file(start_arbiter: Start, tmp_path: Path) -> None:
    log_file = tmp_path / "ingestd.log"
    run = start_arbiter("idle", log_file=str(log_file))
    run.wait_event("supervisor ready")
    log_file.rename(tmp_path / "ingestd.log.1")  # what logrotate does

    run.send(signal.SIGUSR1)

    reopened = run.wait_event("log files reopened")[0]  # read from the new file
    assert reopened["files"] == 1
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_real_http_child_heartbeats_and_stops_cleanly(
    start_arbiter: Start, conn: psycopg.Connection[Any]
) -> None:
    run = start_arbiter("idle", http="real", http_port=0, heartbeat_timeout_seconds=2.0)
    started = run.wait_event("http child started")[0]
    details = wait_until(
        lambda: next(
            (
                r["details"]
                for r in supervisor_rows(conn, run)
                if r["details"].get("http_heartbeat_age_seconds") is not None
            ),
            None,
        ),
        "the http child's heartbeats published",
    )
    assert details["http_pid"] == started["worker_pid"]
    assert details["http_heartbeat_age_seconds"] < 2.0
    assert not run.events("killing http child") and not run.events("http child exited")
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK
    exited = run.events("http child exited")[0]
    assert exited["reason"] == "shutdown" and exited["exit_code"] == EXIT_OK


def test_a_taken_http_port_stops_the_daemon_with_a_clear_error(start_arbiter: Start) -> None:
    """Issue 16: the HTTP child crash-looped on `address already in use` while the
    supervisor stayed up and told systemd it was ready."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = start_arbiter("idle", http="real", http_port=port, http_host="127.0.0.1")

        assert run.wait_exit() == EXIT_CONFIG
    gave_up = run.wait_event("a child reported a configuration error: giving up")[0]
    assert gave_up["kind"] == "http"
    assert len(run.events("http child started")) == 1, "the port clash is not retried"
    assert f"cannot listen on 127.0.0.1:{port}" in run.log_path.read_text()


def test_the_http_child_is_named_as_itself_not_as_worker_0(start_arbiter: Start) -> None:
    run = start_arbiter("idle", http="http_idle")
    started = run.wait_event("http child started")[0]
    assert started["child"] == "http" and "worker_slot" not in started
    worker = run.wait_event("worker started")[0]
    assert worker["worker_slot"] == 0 and "child" not in worker
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK
