"""Sentry, end to end: a real ``ingestd run`` reports to a local HTTP server standing in for
Sentry's ingest. A document that fails for good is one event, tagged with its correlation
id and stage, carrying neither document text nor the API key (bad input is none); a worker
killed under a document is one event from the supervisor."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import psycopg

from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.ingest import IngestResult
from tests.emulators.openai_api import DEFAULT_API_KEY
from tests.supervisor.observability.obs_support import Daemon, SentryIngest, wait_until

BAD_MARKER = "Quarterly figures for the Tamarind acquisition"
GOOD_MARKER = "The lighthouse keeper logs every passing schooner"
BAD = (BAD_MARKER + " are attached below.\n").encode() + b"\x00\x00\x00 turns binary\n"
WRONG_KEY = "sk-not-the-account-key-0123456789"
GOOD = "\n\n".join(f"# Part {i}\n\n{GOOD_MARKER}, entry {i}." for i in range(4)).encode()


def _openai_env(daemon_env: dict[str, str], emulator: Any, dsn: str) -> dict[str, str]:
    return {
        **daemon_env,
        "INGESTD_EMBEDDER": "openai",
        "INGESTD_EMBEDDING_DIMENSIONS": "256",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": emulator.base_url,
        "SENTRY_DSN": dsn,
        "SENTRY_ENVIRONMENT": "e2e",
    }


def _assert_clean(sentry: SentryIngest) -> None:
    for envelope in sentry.received():
        assert envelope.path == "/api/1/envelope/"
        for secret in (DEFAULT_API_KEY, BAD_MARKER, GOOD_MARKER):
            assert secret.encode() not in envelope.raw, f"{secret!r} reached Sentry"


def _correlation_id(conn: psycopg.Connection[Any], doc_id: object) -> str:
    row = conn.execute("SELECT correlation_id FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert row is not None
    return str(row["correlation_id"])


def test_a_document_failed_for_good_is_one_event_bad_input_is_none(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    sentry_ingest: SentryIngest,
    openai_emulator: Any,
    ingest_bytes: Callable[..., IngestResult],
    conn: psycopg.Connection[Any],
) -> None:
    """The API refuses our key (auth: someone must act) for the good document; the bad
    one fails while parsing (invalid_input: the sender's problem, recorded, not paged)."""
    bad = ingest_bytes(BAD, "bad.txt", "text/plain")
    good = ingest_bytes(GOOD, "good.md", "text/markdown")
    env = {
        **_openai_env(daemon_env, openai_emulator, sentry_ingest.dsn),
        "OPENAI_API_KEY": WRONG_KEY,
        "INGESTD_WORKERS": "1",
    }
    daemon = start_daemon(env)
    assert daemon.wait_exit() == EXIT_OK, daemon.tail()

    rows = {
        r["id"]: (r["status"], r["error_class"])
        for r in conn.execute("SELECT id, status::text AS status, error_class FROM documents")
    }
    assert rows == {
        bad.document_id: ("failed", "invalid_input"),
        good.document_id: ("failed", "auth"),
    }

    # The worker flushes before it exits, so everything it sent has arrived.
    events = sentry_ingest.events()
    assert len(events) == 1, [e.get("tags") for e in events]
    (event,) = events
    tags = event["tags"]
    assert tags["correlation_id"] == _correlation_id(conn, good.document_id)
    assert tags["document_id"] == str(good.document_id)
    assert tags["stage"] == "embedding"
    assert tags["error_class"] == "auth"
    assert tags["role"] == "worker"
    assert event["environment"] == "e2e"
    assert event["release"] == f"ingestd@{version('ingestd')}"
    _assert_clean(sentry_ingest)
    for envelope in sentry_ingest.received():
        assert WRONG_KEY.encode() not in envelope.raw


def test_killed_worker_is_reported_by_the_supervisor(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    sentry_ingest: SentryIngest,
    openai_emulator: Any,
    ingest_bytes: Callable[..., IngestResult],
    conn: psycopg.Connection[Any],
) -> None:
    good = ingest_bytes(GOOD, "slow.md", "text/markdown")
    # The embedding request hangs until the worker is killed under it.
    openai_emulator.config.latency = 60.0
    env = {**_openai_env(daemon_env, openai_emulator, sentry_ingest.dsn), "INGESTD_WORKERS": "1"}
    daemon = start_daemon(env)

    def embedding_worker() -> dict[str, Any] | None:
        return conn.execute(
            "SELECT pid, slot FROM worker_status WHERE supervisor LIKE %s"
            " AND document_id = %s AND stage = 'embedding'",
            (f"%:{daemon.pid}", good.document_id),
        ).fetchone()

    worker = wait_until(
        embedding_worker, "the worker to be embedding the document", on_timeout=daemon.tail
    )
    os.kill(worker["pid"], signal.SIGKILL)
    # The killed request stays asleep in the emulator; its replacement's request is fast.
    openai_emulator.config.latency = 0.0

    def supervisor_events() -> list[dict[str, Any]]:
        return [e for e in sentry_ingest.events() if e["tags"].get("role") == "supervisor"]

    deaths = wait_until(
        supervisor_events, "the supervisor's worker-death event", on_timeout=daemon.tail
    )
    assert len(deaths) == 1
    tags = deaths[0]["tags"]
    assert tags["reason"] == "crash"
    assert tags["worker_pid"] == str(worker["pid"])
    assert tags["worker_slot"] == str(worker["slot"])
    assert tags["document_id"] == str(good.document_id)
    assert tags["correlation_id"] == _correlation_id(conn, good.document_id)
    assert tags["stage"] == "embedding"

    # The replacement worker finishes the document; nothing else was reported.
    assert daemon.wait_exit() == EXIT_OK, daemon.tail()
    row = conn.execute(
        "SELECT status::text AS status FROM documents WHERE id = %s", (good.document_id,)
    ).fetchone()
    assert row is not None and row["status"] == "complete"
    assert len(sentry_ingest.events()) == 1, [e.get("tags") for e in sentry_ingest.events()]
    _assert_clean(sentry_ingest)
