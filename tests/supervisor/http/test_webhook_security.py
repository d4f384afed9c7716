"""The LlamaParse webhook refuses everything it cannot trust, and changes nothing when it does."""

from __future__ import annotations

import json
import time

import pytest

from ingestd.shared.llamaparse import LlamaParseClient
from tests.emulators import call
from tests.emulators.llamaparse_api import DEFAULT_API_KEY
from tests.supervisor.http.http_harness import (
    event_body,
    park,
    request,
    signed_headers,
    snapshot,
    zeros,
)

JOB = "job-known-0001"


@pytest.fixture
def parked(db, ingest_bytes):
    doc_id = ingest_bytes(b"some text to parse remotely", "remote.txt").document_id
    park(db, doc_id, JOB)
    return doc_id


def _post(server, body, headers):
    return request("POST", server.url + "/v1/webhooks/llamaparse", data=body, headers=headers)


def _status(db, doc_id) -> str:
    return str(
        db.execute("SELECT status FROM documents WHERE id = %s", (doc_id,)).fetchone()["status"]
    )


def test_refusals_change_nothing(server, db, parked) -> None:
    before = snapshot(db)
    good = event_body(JOB)

    no_signature = _post(server, good, {"Content-Type": "application/json"})
    assert no_signature.status == 401

    wrong_secret = _post(server, good, signed_headers(good, "not-the-secret"))
    assert wrong_secret.status == 401

    garbage = _post(server, good, {"LC-Signature": "sha256=" + "0" * 64})
    assert garbage.status == 401
    assert _post(server, good, {"LC-Signature": "md5=abc"}).status == 401

    # A valid signature, but over other bytes: the body was tampered with.
    other = event_body("job-someone-else")
    tampered = _post(server, other, signed_headers(good))
    assert tampered.status == 401

    # Signed correctly, but not an event.
    not_json = b"{not json"
    assert _post(server, not_json, signed_headers(not_json)).status == 400
    no_job = json.dumps(
        {"event_type": "parse.success", "timestamp": time.time(), "data": {}}
    ).encode()
    assert _post(server, no_job, signed_headers(no_job)).status == 400

    # Signed, well-formed, for a job nobody submitted.
    unknown = event_body("job-never-submitted")
    assert _post(server, unknown, signed_headers(unknown)).status == 404

    # A delivery captured long ago, replayed with its valid signature.
    stale = event_body(JOB, timestamp=time.time() - 3600)
    reply = _post(server, stale, signed_headers(stale))
    assert reply.status == 401 and "stale" in reply.json()["detail"]
    future = event_body(JOB, timestamp=time.time() + 3600)
    assert _post(server, future, signed_headers(future)).status == 401

    assert snapshot(db) == before
    assert _status(db, parked) == "awaiting_parse"


def test_a_50mb_body_is_refused_without_being_read_whole(server, db, parked) -> None:
    before = snapshot(db)
    url = server.url + "/v1/webhooks/llamaparse"
    sig = {"LC-Signature": "sha256=" + "0" * 64, "Content-Type": "application/json"}
    declared = request(
        "POST", url, data=zeros(50 << 20), headers={**sig, "Content-Length": str(50 << 20)}
    )
    assert declared.status == 413
    chunked = request("POST", url, data=zeros(50 << 20), headers=sig)
    assert chunked.status == 413
    assert snapshot(db) == before


def test_a_valid_duplicate_is_a_no_op(server, db, ingest_bytes, llamaparse) -> None:
    text = b"# Title\n\nA paragraph that LlamaParse will hand back as markdown.\n"
    doc_id = ingest_bytes(text, "dup.md", mime_type="text/markdown").document_id

    async def submit() -> str:
        async with LlamaParseClient(DEFAULT_API_KEY, llamaparse.url) as client:
            return await client.upload(text, "dup.md")

    job_id = call(llamaparse, submit())
    call(llamaparse, llamaparse.wait_job(job_id))
    park(db, doc_id, job_id)

    body = event_body(job_id)
    first = _post(server, body, signed_headers(body))
    assert first.status == 200, first.body
    assert first.json()["result"] == "applied"
    doc = db.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert (doc["status"], doc["parser"], doc["parsed_segments"]) == ("parsed", "llamaparse", 1)
    stored = "".join(
        r["text"]
        for r in db.execute(
            "SELECT text FROM parsed_segments WHERE document_id = %s ORDER BY seq", (doc_id,)
        )
    )
    assert stored == text.decode()
    last = db.execute(
        "SELECT event, from_status, to_status, details FROM document_events"
        " WHERE document_id = %s ORDER BY id DESC LIMIT 1",
        (doc_id,),
    ).fetchone()
    assert (last["event"], last["from_status"], last["to_status"]) == (
        "parse_result",
        "awaiting_parse",
        "parsed",
    )
    assert last["details"]["job_id"] == job_id and last["details"]["via"] == "webhook"

    after_first = snapshot(db)
    again = _post(server, body, signed_headers(body))
    assert (again.status, again.json()["result"]) == (200, "duplicate")
    assert snapshot(db) == after_first

    # A different delivery for the same, already handled job: acknowledged, nothing changes.
    later = event_body(job_id)
    reply = _post(server, later, signed_headers(later))
    assert (reply.status, reply.json()["result"]) == (200, "already_handled")
    assert snapshot(db) == after_first


def test_parse_error_fails_the_document_in_one_step(server, db, parked) -> None:
    body = event_body(JOB, "parse.error", error_message="Failed to parse the document: corrupt")
    reply = _post(server, body, signed_headers(body))
    assert reply.status == 200 and reply.json()["status"] == "failed"
    doc = db.execute("SELECT * FROM documents WHERE id = %s", (parked,)).fetchone()
    assert (doc["status"], doc["error_class"], doc["parse_job_id"]) == (
        "failed",
        "invalid_input",
        None,
    )
    assert "corrupt" in doc["error_message"]
    assert db.execute("SELECT count(*) AS n FROM webhook_deliveries").fetchone()["n"] == 1
    # Its replay is a no-op even though the job id is gone from the document.
    again = _post(server, body, signed_headers(body))
    assert (again.status, again.json()["result"]) == (200, "duplicate")


def test_transient_parse_error_schedules_a_fresh_submission(server, db, parked) -> None:
    body = event_body(JOB, "parse.error", error_message="Internal server error, try again")
    reply = _post(server, body, signed_headers(body))
    assert reply.status == 200, reply.body
    doc = db.execute("SELECT * FROM documents WHERE id = %s", (parked,)).fetchone()
    # Still resting before parse, without the failed job, one attempt spent.
    assert (doc["status"], doc["parse_job_id"], doc["attempts"], doc["error_class"]) == (
        "awaiting_parse",
        None,
        1,
        "transient",
    )


def test_document_being_polled_gets_409(server, db, parked) -> None:
    db.execute(
        "UPDATE documents SET status = 'parsing', lease_owner = 'w',"
        " lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        (parked,),
    )
    before = snapshot(db)
    body = event_body(JOB)
    assert _post(server, body, signed_headers(body)).status == 409
    assert snapshot(db) == before
