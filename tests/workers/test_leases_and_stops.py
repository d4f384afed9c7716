"""Runs whose leases change under them. A planned stop (TERM drain, HUP reload, USR2
recycle) or a lost lease in the middle of a document processed alone ends the worker's
run cleanly: the document is released to a resting status (or let go), and the worker
returns instead of raising. A lease left by a vanished worker is reclaimed and counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from ingestd.shared.db import jobs
from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.base import Worker
from ingestd.workers.loop import close_runner

pytestmark = pytest.mark.db


class _StopOnFirstBatch(HashEmbedder):
    """Asks its worker to stop (as SIGTERM's handler does) during the first request."""

    worker: Worker | None = None
    action: str = "stop"
    conn: Any = None
    doc_id: Any = None

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        if self.usage.requests == 0 and self.worker is not None:
            if self.action == "stop":
                self.worker.stop.request("shutdown")
            else:
                jobs.delete_document(self.conn, self.doc_id)
        return await super().embed(texts, correlation_id=correlation_id)


def _big_text() -> bytes:
    para = " ".join(f"word{i % 997} lorem ipsum dolor sit amet" for i in range(40)) + "\n\n"
    return (para * 1200).encode()  # > 1 MiB: processed alone, streamed


@pytest.mark.parametrize("action", ["stop", "delete"])
def test_a_planned_stop_or_lost_lease_mid_embedding_ends_the_run_cleanly(
    action: str, conn: Any, make_settings: Any, ingest_bytes: Any, db_url: str
) -> None:
    settings = make_settings(batch_max_inputs=8)
    data = _big_text()
    assert len(data) > settings.claim_max_bytes
    doc_id = ingest_bytes(data).document_id
    embedder = _StopOnFirstBatch(dimensions=384)
    embedder.action = action
    embedder.conn = conn
    embedder.doc_id = doc_id
    worker = Worker(settings, url=db_url, owner="test:1:0:0", embedder_factory=lambda: embedder)
    embedder.worker = worker
    try:
        assert worker.run(until_idle=action == "delete") == 0
    finally:
        close_runner(embedder)
        worker.close()
    row = conn.execute(
        "SELECT status, lease_owner FROM documents WHERE id = %s", (doc_id,)
    ).fetchone()
    if action == "stop":
        assert row is not None and row["lease_owner"] is None
        assert row["status"] in {"queued", "parsed", "chunked", "embedded"}
    else:
        assert row is None


def test_an_expired_lease_is_reclaimed_and_counted(
    conn: Any, make_settings: Any, ingest_bytes: Any, db_url: str
) -> None:
    doc_id = ingest_bytes(b"a document whose first worker vanished. " * 20).document_id
    (ghost,) = jobs.claim(conn, "ghost:1:0:0", lease_seconds=0.001)
    assert ghost.id == doc_id
    conn.execute("SELECT pg_sleep(0.01)")  # the lease is a deadline on the database's clock
    counted: list[tuple[str, int]] = []
    metrics = Metrics(None, role="worker")
    metrics.incr = lambda name, count=1, rate=1.0: counted.append((name, count))  # type: ignore[method-assign]
    embedder = HashEmbedder(dimensions=384)
    worker = Worker(
        make_settings(),
        url=db_url,
        owner="test:1:0:0",
        metrics=metrics,
        embedder_factory=lambda: embedder,
    )
    try:
        worker.run(until_idle=True)
    finally:
        close_runner(embedder)
        worker.close()
    assert ("leases.expired", 1) in counted
    row = conn.execute("SELECT status FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert row["status"] == "complete"
