"""Kill a worker mid-document; the next one finishes it without duplicating or
losing anything, asking the API only for what is missing."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

from ingestd.shared.db import jobs
from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.errors import ErrorClass
from ingestd.shared.ingest import ingest_file
from profiling import generators
from tests.workers.support import run_worker


def _work(settings: Any) -> None:
    from ingestd.workers.process import worker_main

    worker_main(settings, 0, "victim:1:0:0", None)


def _wait(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # polling the database for a condition, with a deadline
    raise AssertionError("condition not reached")


def kill_victim_when(settings: Any, ready: Any) -> None:
    """Run a real worker process ("victim") until ``ready()``, then SIGKILL it."""
    proc = mp.get_context("spawn").Process(target=_work, args=(settings,))
    proc.start()
    try:
        _wait(ready)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)


def release_victim(conn: Any) -> list[Any]:
    """What the supervisor does the moment it reaps the dead worker."""
    return jobs.release_worker_leases(
        conn,
        "victim:1:0:0",
        error_class=ErrorClass.CRASH,
        message="worker killed by SIGKILL",
        max_attempts=5,
        retry_base=0.001,
        retry_cap=0.001,
    )


def rescue(settings: Any, db_url: str) -> None:
    """Another worker drains what the victim left."""
    run_worker(settings, db_url, build_embedder(settings), owner="rescuer:1:0:0")


def test_sigkill_mid_embedding_resumes_without_duplicates(
    conn, db_url, openai_settings, openai_emulator, tmp_path
) -> None:
    settings = openai_settings(
        batch_max_inputs=20, embed_concurrency=1, chunk_target_tokens=64, chunk_overlap_tokens=8
    )
    path = generators.write_markdown(tmp_path / "big.md", 200_000, seed=7)
    doc_id = ingest_file(conn, path).document_id
    openai_emulator.config.latency = 0.05  # so the kill lands between batches

    def progress() -> int:
        row = conn.execute(
            "SELECT chunks_embedded, chunks_total FROM documents WHERE id = %s", (doc_id,)
        ).fetchone()
        return row["chunks_embedded"] if row["chunks_embedded"] >= 100 else 0

    kill_victim_when(settings, progress)
    openai_emulator.config.latency = 0.0

    before = conn.execute(
        "SELECT status, chunks_total, chunks_embedded FROM documents WHERE id = %s", (doc_id,)
    ).fetchone()
    assert before["status"] == "embedding"
    missing = conn.execute(
        "SELECT count(*) AS n FROM chunks WHERE document_id = %s AND embedding IS NULL", (doc_id,)
    ).fetchone()["n"]
    assert 0 < missing < before["chunks_total"]
    assert before["chunks_embedded"] == before["chunks_total"] - missing

    released = release_victim(conn)
    assert [d for d, _ in released] == [doc_id]
    conn.execute("UPDATE documents SET run_after = now() WHERE id = %s", (doc_id,))

    served_before = openai_emulator.stats.inputs_served
    rescue(settings, db_url)

    after = conn.execute(
        "SELECT status, attempts, chunks_total, chunks_embedded FROM documents WHERE id = %s",
        (doc_id,),
    ).fetchone()
    assert after["status"] == "complete"
    assert after["attempts"] == 1  # the crash was counted
    assert openai_emulator.stats.inputs_served - served_before == missing, (
        "the API is asked only for the chunks that had no vector"
    )
    rows = conn.execute(
        "SELECT count(*) AS n, count(DISTINCT ordinal) AS d, count(embedding) AS e,"
        " min(vector_norm(embedding)) AS minnorm FROM chunks WHERE document_id = %s",
        (doc_id,),
    ).fetchone()
    assert rows["n"] == rows["d"] == rows["e"] == after["chunks_total"] == after["chunks_embedded"]
    assert rows["minnorm"] > 0.99
    history = [
        r["event"]
        for r in conn.execute(
            "SELECT event FROM document_events WHERE document_id = %s ORDER BY id", (doc_id,)
        )
    ]
    assert "retry_scheduled" in history
