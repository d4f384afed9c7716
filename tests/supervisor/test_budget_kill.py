"""Time budgets through a real supervisor and real workers: a parser that never
returns is killed past its budget and its document fails on its first attempt; a
parse that yields no text for a long while is progress, not a hang."""

from __future__ import annotations

import io
import signal
from collections.abc import Callable
from typing import Any

import psycopg
from reportlab.pdfgen import canvas

from ingestd.shared.exitcodes import EXIT_OK
from tests.shared.pdf_docs import blank_pages
from tests.supervisor.arbiter_support import ArbiterRun, wait_until
from tests.supervisor.test_arbiter_deaths import document, failure_events

Start = Callable[..., ArbiterRun]
PDF = "application/pdf"


def one_page_pdf() -> bytes:
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf)
    pdf.drawString(72, 720, "a page the parser never gets through")
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


def status_of(conn: psycopg.Connection[Any], doc: Any) -> str:
    return str(document(conn, doc)["status"])


def test_parser_stuck_past_its_budget_fails_its_document_alone_on_attempt_one(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    stuck = ingest_bytes(one_page_pdf(), "stuck.pdf", PDF).document_id
    fine = ingest_bytes(b"a document that parses at once", "fine.txt").document_id
    # Both small: claimed together, parsed one after the other. The parser hangs on the
    # PDF deaf to SIGINT, as if in C code: only the supervisor's kill can stop it.
    run = start_arbiter(
        "hanging_parser",
        budget_floor_seconds=0.5,
        budget_seconds_per_mib=0.0,
        budget_seconds_per_page=0.0,
        heartbeat_timeout_seconds=15.0,
        lease_seconds=600.0,
    )

    killing = run.wait_event("killing worker", reason="budget")[0]
    assert killing["signal"] == "SIGINT" and killing["document_id"] == str(stuck)
    exited = run.wait_event("worker exited", reason="budget")[0]
    assert exited["signal"] == "SIGKILL"  # deaf to the INT: killed after its grace
    events = wait_until(lambda: failure_events(conn, stuck), "the stuck document charged")
    assert [(e["event"], e["error_class"], e["attempt"]) for e in events] == [
        ("failed", "invalid_input", 1)
    ]
    assert "parsing took longer than its 0.5 s budget for " in events[0]["message"]
    row = document(conn, stuck)
    assert (row["status"], row["attempts"], row["error_class"]) == ("failed", 1, "invalid_input")
    # The other member of the group was given back without an attempt and completes.
    wait_until(lambda: status_of(conn, fine) == "complete", "the other document complete")
    assert document(conn, fine)["attempts"] == 0
    assert failure_events(conn, fine) == []
    # A death charged to a document is not the daemon's crash loop: it is still up.
    assert run.proc.poll() is None
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK


def test_blank_pdf_fails_no_text_layer_on_attempt_one_without_a_stale_heartbeat(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    # ~5 s of parsing that yields no text at all on a quiet machine (measured 1.7 s for
    # 5,000 pages; longer under load, which only widens the gap), with a heartbeat timeout
    # of 3 s: only beats on progress keep the worker alive. 3 s, not less: a loaded
    # 2-core CI machine can stall any process for a second or so.
    doc = ingest_bytes(blank_pages(15_000), "blank.pdf", PDF).document_id
    run = start_arbiter("real", heartbeat_timeout_seconds=3.0, lease_seconds=600.0)

    wait_until(lambda: status_of(conn, doc) == "failed", "the blank PDF failed", timeout=60.0)
    row = document(conn, doc)
    assert (row["attempts"], row["error_class"]) == (1, "invalid_input")
    assert row["error_message"].startswith(
        "PDF has no text layer: 15,000 pages, 0 characters; OCR is not done here"
    )
    assert run.events("killing worker") == []
    assert run.proc.poll() is None
    run.send(signal.SIGTERM)
    assert run.wait_exit() == EXIT_OK
