"""Liveness, readiness, status and document views over a real socket and a real database."""

from __future__ import annotations

import json
import uuid
from typing import Any

from ingestd.shared.db import reports
from ingestd.supervisor.cli import dumps
from ingestd.supervisor.status import gather_status
from tests.supervisor.http.http_harness import request

_CLOCK_KEYS = ("heartbeat_age_seconds", "uptime_seconds", "oldest_runnable_age_seconds")


def _without_clocks(value: Any) -> Any:
    """Drop the fields that are ages measured at query time."""
    if isinstance(value, dict):
        return {k: _without_clocks(v) for k, v in value.items() if k not in _CLOCK_KEYS}
    if isinstance(value, list):
        return [_without_clocks(v) for v in value]
    return value


def _add_worker(conn: Any, slot: int, heartbeat_sql: str) -> None:
    conn.execute(
        "INSERT INTO worker_status (supervisor, slot, pid, owner, started_at, heartbeat_at)"
        f" VALUES ('host:1', %s, %s, %s, now() - interval '1 minute', {heartbeat_sql})",
        (slot, 1000 + slot, f"host:1:{slot}:0"),
    )


def test_healthz_and_correlation_ids(server) -> None:
    reply = request("GET", server.url + "/healthz", headers={"X-Correlation-Id": "abc-123"})
    assert (reply.status, reply.json()) == (200, {"status": "ok"})
    assert reply.headers["X-Correlation-Id"] == "abc-123"
    fresh = request("GET", server.url + "/healthz")
    assert uuid.UUID(fresh.headers["X-Correlation-Id"])
    # A malformed id is replaced, not echoed (it would land in every log line).
    bad = request("GET", server.url + "/healthz", headers={"X-Correlation-Id": "a b\tc"})
    assert bad.headers["X-Correlation-Id"] != "a b\tc"
    assert uuid.UUID(bad.headers["X-Correlation-Id"])
    missing = request("GET", server.url + "/no/such/route", headers={"X-Correlation-Id": "x-1"})
    assert missing.status == 404 and missing.headers["X-Correlation-Id"] == "x-1"


def test_readyz_needs_a_fresh_worker_heartbeat(server, db) -> None:
    reply = request("GET", server.url + "/readyz")
    assert reply.status == 503
    assert "no worker heartbeat" in reply.json()["reason"]
    _add_worker(db, 0, "now() - interval '10 minutes'")  # stale: still not ready
    reply = request("GET", server.url + "/readyz")
    assert reply.status == 503 and "no worker heartbeat" in reply.json()["reason"]
    _add_worker(db, 1, "now()")
    reply = request("GET", server.url + "/readyz")
    assert reply.status == 200, reply.json()
    assert reply.json()["status"] == "ready" and reply.json()["workers_alive"] == 1


def test_readyz_refuses_an_outdated_schema(server, db) -> None:
    _add_worker(db, 0, "now()")
    latest = db.execute("SELECT max(version) AS v FROM schema_migrations").fetchone()["v"]
    db.execute("UPDATE schema_migrations SET version = -version WHERE version = %s", (latest,))
    try:
        reply = request("GET", server.url + "/readyz")
        assert reply.status == 503
        assert "schema" in reply.json()["reason"]
    finally:
        db.execute("UPDATE schema_migrations SET version = -version WHERE version < 0")
    assert request("GET", server.url + "/readyz").status == 200


def test_status_is_gather_status(server, db, ingest_bytes) -> None:
    ingest_bytes(b"first document", "a.txt")
    ingest_bytes(b"second document", "b.txt")
    _add_worker(db, 0, "now()")
    reply = request("GET", server.url + "/v1/status")
    assert reply.status == 200
    expected = json.loads(dumps(gather_status(db)))
    assert _without_clocks(reply.json()) == _without_clocks(expected)
    assert reply.json()["documents"]["queued"] == 2


def test_document_view_is_show_json(server, db, ingest_bytes) -> None:
    doc_id = ingest_bytes(b"a document to show", "show.txt").document_id
    reply = request("GET", f"{server.url}/v1/documents/{doc_id}")
    assert reply.status == 200
    expected = json.loads(
        dumps({"document": reports.document(db, doc_id), "events": reports.events(db, doc_id)})
    )
    assert reply.json() == expected
    assert reply.json()["events"][0]["event"] == "ingested"
    by_prefix = request("GET", f"{server.url}/v1/documents/{str(doc_id)[:8]}")
    assert by_prefix.status == 200 and by_prefix.json()["document"]["id"] == str(doc_id)
    assert request("GET", f"{server.url}/v1/documents/{uuid.uuid4()}").status == 404
    # Not a LIKE pattern: '%' would match any document.
    assert request("GET", f"{server.url}/v1/documents/%25%25%25%25%25%25%25%25").status == 404
