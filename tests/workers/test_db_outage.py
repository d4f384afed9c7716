"""A worker rides out a database outage: its connection broken mid-document (the
server restarted, ``pg_terminate_backend``) or the database unreachable when it
starts. It waits with backoff while heartbeating, reconnects, gives back what it held
without charging an attempt, and goes on; it never exits as a crash."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
import pytest

from ingestd.shared.db import reports
from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.workers.base import Worker
from ingestd.workers.loop import close_runner
from tests.polling import wait_until

pytestmark = pytest.mark.db


class _CutsTheConnection(HashEmbedder):
    """Terminates the worker's database session during the first embedding request,
    as a server restart would."""

    conn: Any = None

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        if self.usage.requests == 0:
            killed = self.conn.execute(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                " WHERE application_name = 'ingestd-worker-0'"
            ).fetchone()
            assert killed["n"] == 1
        return await super().embed(texts, correlation_id=correlation_id)


def test_a_connection_cut_mid_document_is_ridden_out_without_charging_an_attempt(
    conn: Any, make_settings: Any, ingest_bytes: Any, db_url: str
) -> None:
    settings = make_settings(batch_max_inputs=4)
    text = " ".join(f"sentence {i} about outages and recovery." for i in range(3000))
    doc_id = ingest_bytes(text.encode()).document_id
    embedder = _CutsTheConnection(dimensions=384)
    embedder.conn = conn
    worker = Worker(settings, url=db_url, owner="test:1:0:0", embedder_factory=lambda: embedder)
    try:
        assert worker.run(until_idle=True) == 0
    finally:
        close_runner(embedder)
        worker.close()

    doc = reports.document(conn, doc_id)
    assert doc is not None and doc["status"] == "complete"
    assert doc["error_class"] is None
    kinds = [e["event"] for e in reports.events(conn, doc_id)]
    assert "released" in kinds  # given back on reconnect, not failed or retried
    assert not {"retry", "failed", "dead"} & set(kinds)
    released = next(e for e in reports.events(conn, doc_id) if e["event"] == "released")
    assert "database connection was lost" in released["message"]
    n = conn.execute(
        "SELECT count(*) AS n FROM chunks WHERE document_id = %s AND embedding IS NULL", (doc_id,)
    ).fetchone()["n"]
    assert n == 0


def test_an_unreachable_database_at_start_is_waited_for_not_a_crash(make_settings: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings()
    url = f"postgresql://nobody@127.0.0.1:{port}/none?connect_timeout=2"
    worker = Worker(settings, url=url, owner="test:1:0:0", embedder_factory=HashEmbedder)
    reconnects: list[str] = []
    worker.metrics.incr = lambda name, *_a, **_k: reconnects.append(name)  # type: ignore[method-assign]
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    wait_until(lambda: "db.reconnects" in reconnects, "a reconnect attempt", timeout=30)
    worker.stop.request("shutdown")
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert result == [0]


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        (psycopg.OperationalError("connection refused"), True),  # libpq: no SQLSTATE
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.QueryCanceled("statement timeout"), False),
        (psycopg.errors.SerializationFailure("could not serialize"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
    ],
)
def test_what_counts_as_the_database_going_away(
    exc: psycopg.Error, away: bool, make_settings: Any
) -> None:
    # A session terminated while a new connection is being set up leaves no connection
    # object to look at: the error itself must say it (a worker crashed on exactly that).
    worker = Worker(make_settings(), url="postgresql:///unused", owner="test:1:0:0")
    assert worker._database_away(exc) is away
