"""The asynchronous LlamaParse path end to end: a real worker, the HTTP app on a real port,
the LlamaParse emulator delivering signed webhooks to it, real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ingestd.shared.settings import Settings
from tests.emulators import LlamaParseEmulator, running
from tests.emulators.llamaparse_api import DEFAULT_API_KEY, LlamaParseFault
from tests.supervisor.http.http_harness import SECRET, AppServer, wait_for
from tests.workers.support import run_worker

MARKDOWN = (
    "# Remote parsing guide\n\n"
    + "\n\n".join(
        f"## Section {i}\n\nParagraph {i} explains remote parsing in detail." for i in range(40)
    )
    + "\n"
).encode()


def _doc(db: Any, doc_id: Any) -> dict[str, Any]:
    return db.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()


def _events(db: Any, doc_id: Any) -> list[tuple[str, str | None, str | None, dict | None]]:
    return [
        (r["event"], r["from_status"], r["to_status"], r["details"])
        for r in db.execute(
            "SELECT event, from_status, to_status, details FROM document_events"
            " WHERE document_id = %s ORDER BY id",
            (doc_id,),
        )
    ]


def drive_to_complete(db: Any, db_url: str, settings: Settings, doc_id: Any) -> None:
    """Run the worker whenever the document is claimable, until it is complete."""

    def due_or_done() -> bool:
        row = db.execute(
            "SELECT status, run_after <= now() AS due FROM documents WHERE id = %s", (doc_id,)
        ).fetchone()
        if row["status"] in ("failed", "dead"):
            raise AssertionError(f"document ended {row['status']}")
        return row["status"] == "complete" or row["due"]

    def progressed() -> bool:
        wait_for(due_or_done, within=30, what="the document to become claimable")
        run_worker(settings, db_url)
        return _doc(db, doc_id)["status"] == "complete"

    wait_for(progressed, within=60, what="the document to complete")


@pytest.fixture
def worker_settings(
    make_settings: Callable[..., Settings], llamaparse: LlamaParseEmulator, server: AppServer
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base = {
            "parser": "llamaparse",
            "llama_cloud_api_key": DEFAULT_API_KEY,
            "llama_cloud_base_url": llamaparse.url,
            "public_url": server.url,
            "webhook_secret": SECRET,
            "chunk_target_tokens": 64,
            "chunk_overlap_tokens": 8,
        }
        return make_settings(**{**base, **overrides})

    return make


def test_signed_webhook_completes_the_document(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    settings = worker_settings(parse_callback_timeout_seconds=3600)
    doc_id = ingest_bytes(MARKDOWN, "guide.md", mime_type="text/markdown").document_id
    run_worker(settings, db_url)
    # Parked without a lease until the callback; the deadline is an hour away.
    wait_for(
        lambda: _doc(db, doc_id)["status"] in ("parsed", "complete"),
        what="the webhook to bring the result",
    )
    drive_to_complete(db, db_url, settings, doc_id)

    doc = _doc(db, doc_id)
    assert (doc["status"], doc["parser"], doc["lease_owner"]) == ("complete", "llamaparse", None)
    events = _events(db, doc_id)
    steps = [(e, f, t) for e, f, t, _ in events]
    assert steps[:4] == [
        ("ingested", None, "queued"),
        ("claimed", "queued", "parsing"),
        ("stage_finished", "parsing", "awaiting_parse"),
        ("parse_result", "awaiting_parse", "parsed"),
    ]
    assert steps[-1] == ("stage_finished", "finalizing", "complete")
    job_id = events[2][3]["job_id"]
    assert doc["parse_job_id"] == job_id and events[3][3]["via"] == "webhook"
    chunks = " ".join(
        r["text"]
        for r in db.execute(
            "SELECT text FROM chunks WHERE document_id = %s ORDER BY ordinal", (doc_id,)
        )
    )
    assert "Remote parsing guide" in chunks and "Section 39" in chunks
    assert llamaparse.stats.uploads == 1
    assert llamaparse.stats.delivered(job_id, "parse.success")
    assert db.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 1


def test_lost_webhook_completes_by_polling_after_the_deadline(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    llamaparse.inject(LlamaParseFault.WEBHOOK_NEVER)
    settings = worker_settings(parse_callback_timeout_seconds=0.2)
    doc_id = ingest_bytes(MARKDOWN, "lost.md", mime_type="text/markdown").document_id
    drive_to_complete(db, db_url, settings, doc_id)

    assert llamaparse.stats.webhooks_suppressed == 1
    steps = [(e, f, t, (d or {}).get("via")) for e, f, t, d in _events(db, doc_id)]
    assert ("claimed", "awaiting_parse", "parsing", None) in steps
    assert ("stage_finished", "parsing", "parsed", "poll") in steps
    assert not any(e == "parse_result" for e, *_ in steps)
    assert _doc(db, doc_id)["status"] == "complete"


def test_a_job_still_running_at_the_deadline_is_waited_for_again(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    llamaparse.config.hold_jobs = True
    llamaparse.inject(LlamaParseFault.WEBHOOK_NEVER)
    settings = worker_settings(parse_callback_timeout_seconds=0.2)
    doc_id = ingest_bytes(MARKDOWN, "slow.md", mime_type="text/markdown").document_id
    run_worker(settings, db_url)

    def polled_while_running() -> bool:
        wait_for(lambda: _doc(db, doc_id)["run_after"] is not None, what="parked")
        run_worker(settings, db_url)
        return any(
            (d or {}).get("polled") and (d or {}).get("state") == "RUNNING"
            for *_, d in _events(db, doc_id)
        )

    wait_for(polled_while_running, what="a poll that finds the job running")
    assert _doc(db, doc_id)["status"] == "awaiting_parse"
    llamaparse.release()
    drive_to_complete(db, db_url, settings, doc_id)
    assert llamaparse.stats.uploads == 1


def test_failed_job_fails_the_document_through_the_webhook(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    llamaparse.inject(LlamaParseFault.JOB_FAILED)
    settings = worker_settings(parse_callback_timeout_seconds=3600)
    doc_id = ingest_bytes(b"this one will not parse", "bad.txt").document_id
    run_worker(settings, db_url)
    doc = wait_for(
        lambda: (d := _doc(db, doc_id))["status"] == "failed" and d,
        what="the parse.error webhook",
    )
    assert doc["error_class"] == "invalid_input"
    assert "could not be processed" in doc["error_message"]
    assert doc["parse_job_id"] is None
    assert ("failed", "awaiting_parse", "failed") in [
        (e, f, t) for e, f, t, _ in _events(db, doc_id)
    ]


def test_same_bytes_again_reuse_the_finished_job(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    settings = worker_settings(parse_callback_timeout_seconds=0.2)
    first = ingest_bytes(MARKDOWN, "again.md", mime_type="text/markdown").document_id
    drive_to_complete(db, db_url, settings, first)
    assert llamaparse.stats.uploads == 1
    result = db.execute("SELECT * FROM parse_results").fetchone()
    assert result["job_id"] == _doc(db, first)["parse_job_id"]

    db.execute("DELETE FROM documents WHERE id = %s", (first,))
    again = ingest_bytes(MARKDOWN, "again.md", mime_type="text/markdown").document_id
    assert again == first  # ids derive from the content
    drive_to_complete(db, db_url, settings, again)
    assert llamaparse.stats.uploads == 1, "the stored result was fetched, not parsed again"
    vias = [(d or {}).get("via") for *_, d in _events(db, again)]
    assert "reuse" in vias


def test_a_delivery_sent_twice_is_applied_once(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    llamaparse.inject(LlamaParseFault.WEBHOOK_DUPLICATE)
    settings = worker_settings(parse_callback_timeout_seconds=3600)
    doc_id = ingest_bytes(MARKDOWN, "twice.md", mime_type="text/markdown").document_id
    run_worker(settings, db_url)
    job_id = wait_for(lambda: _doc(db, doc_id)["parse_job_id"], what="submission")
    deliveries = wait_for(
        lambda: [d for d in llamaparse.stats.delivered(job_id, "parse.success") if d.duplicate],
        what="the duplicate delivery to be answered",
    )
    assert deliveries[0].status == 200
    events = [e for e, *_ in _events(db, doc_id)]
    assert events.count("parse_result") == 1
    assert db.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 1
    drive_to_complete(db, db_url, settings, doc_id)


def test_an_expired_stored_result_is_parsed_afresh(
    db, db_url, llamaparse, worker_settings, ingest_bytes
) -> None:
    settings = worker_settings(parse_callback_timeout_seconds=0.2)
    first = ingest_bytes(MARKDOWN, "expired.md", mime_type="text/markdown").document_id
    drive_to_complete(db, db_url, settings, first)
    db.execute("DELETE FROM documents WHERE id = %s", (first,))

    # Another LlamaParse that never saw the stored job (results expire at the provider).
    with running(LlamaParseEmulator()) as fresh:
        fresh.inject(LlamaParseFault.WEBHOOK_NEVER)
        other = worker_settings(parse_callback_timeout_seconds=0.2, llama_cloud_base_url=fresh.url)
        again = ingest_bytes(MARKDOWN, "expired.md", mime_type="text/markdown").document_id
        drive_to_complete(db, db_url, other, again)
        assert fresh.stats.uploads == 1
    new_job = _doc(db, again)["parse_job_id"]
    assert db.execute("SELECT job_id FROM parse_results").fetchone()["job_id"] == new_job
