"""Documents through the OpenAI emulator's faults: the right outcome, classified,
with no attempt wasted and nothing silently swallowed."""

from __future__ import annotations

from typing import Any

from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.ingest import ingest_file
from tests.emulators.openai_api import OpenAIFault
from tests.workers.support import run_worker

TEXT = "# Notes\n\n" + " ".join(f"Sentence number {i} about embeddings." for i in range(200))


def _ingest(conn: Any, tmp_path: Any, n: int) -> list[Any]:
    ids = []
    for i in range(n):
        p = tmp_path / f"doc{i}.md"
        p.write_text(f"{TEXT}\n\nDocument {i}.\n")
        ids.append(ingest_file(conn, p).document_id)
    return ids


def _run(settings: Any, db_url: str) -> None:
    run_worker(settings, db_url, build_embedder(settings), owner="faults:1:0:0")


def _docs(conn: Any) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT status, attempts, error_class, error_message FROM documents ORDER BY created_at"
    ).fetchall()


def test_insufficient_quota_fails_at_once_without_retries(
    conn, db_url, openai_settings, openai_emulator, tmp_path
) -> None:
    _ingest(conn, tmp_path, 1)
    openai_emulator.inject(OpenAIFault.QUOTA, times=5)
    _run(openai_settings(), db_url)
    (doc,) = _docs(conn)
    assert (doc["status"], doc["error_class"]) == ("failed", "quota")
    assert "quota" in doc["error_message"].lower()
    assert openai_emulator.stats.requests == 1, "insufficient_quota is never retried"


def test_wrong_api_key_fails_with_auth(
    conn, db_url, openai_settings, openai_emulator, tmp_path
) -> None:
    _ingest(conn, tmp_path, 1)
    _run(openai_settings(openai_api_key="sk-wrong-key-123456"), db_url)
    (doc,) = _docs(conn)
    assert (doc["status"], doc["error_class"]) == ("failed", "auth")
    assert "sk-wrong-key-123456" not in doc["error_message"]
    assert openai_emulator.stats.requests == 1


def test_429_storm_and_5xx_burst_complete_without_spending_attempts(
    conn, db_url, openai_settings, openai_emulator, tmp_path
) -> None:
    ids = _ingest(conn, tmp_path, 4)
    openai_emulator.config.forced_retry_after = 0.05
    openai_emulator.inject(OpenAIFault.RATE_LIMIT, times=6)
    openai_emulator.inject(OpenAIFault.UNAVAILABLE, times=2)
    openai_emulator.inject(OpenAIFault.DROP, times=1)
    _run(openai_settings(), db_url)
    docs = _docs(conn)
    assert [d["status"] for d in docs] == ["complete"] * len(ids)
    assert all(d["attempts"] == 0 for d in docs), "transient API trouble is absorbed per request"
    assert openai_emulator.stats.rate_limited == 6


def test_malformed_response_is_retried_never_stored(
    conn, db_url, openai_settings, openai_emulator, tmp_path
) -> None:
    _ingest(conn, tmp_path, 1)
    for fault in (OpenAIFault.NAN, OpenAIFault.WRONG_DIMENSION, OpenAIFault.INVALID_JSON):
        openai_emulator.inject(fault)
    _run(openai_settings(), db_url)
    (doc,) = _docs(conn)
    assert doc["status"] == "complete"
    bad = conn.execute(
        "SELECT count(*) AS n FROM chunks WHERE embedding IS NULL OR vector_norm(embedding) = 0"
    ).fetchone()["n"]
    assert bad == 0
