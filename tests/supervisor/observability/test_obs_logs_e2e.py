"""Logs, end to end: the JSON lines a real ``ingestd run`` writes (supervisor, workers, HTTP
child, libraries) carry each document's correlation id wherever they name the document or
a stage, and never its text or the API key."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.ingest import IngestResult
from tests.supervisor.observability.obs_support import Daemon

API_KEY = "sk-obs-logs-5f0d9c2e7a41b38d"
MARKER = "Whistling otters audit the quarterly ledger at midnight"
BAD_MARKER = "The ferryman's unpaid invoices from Lisbon"
GOOD = "\n\n".join(f"## Chapter {i}\n\n{MARKER}, page {i}." for i in range(5)).encode()
BAD = (BAD_MARKER + " follow.\n").encode() + b"\x00\x00 binary\n"
STAGES = ("parsing", "chunking", "embedding", "finalizing")


def test_log_lines_carry_correlation_ids_and_no_text_or_secret(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    openai_emulator: Any,
    ingest_bytes: Callable[..., IngestResult],
    conn: psycopg.Connection[Any],
) -> None:
    openai_emulator.config.api_key = API_KEY
    good = ingest_bytes(GOOD, "otters.md", "text/markdown")
    bad = ingest_bytes(BAD, "ferry.txt", "text/plain")
    env = {
        **daemon_env,
        "INGESTD_LOG_LEVEL": "DEBUG",  # the most a line could say
        "INGESTD_EMBEDDER": "openai",
        "INGESTD_EMBEDDING_DIMENSIONS": "256",
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": openai_emulator.base_url,
    }
    daemon = start_daemon(env)
    assert daemon.wait_exit() == EXIT_OK, daemon.tail()
    rows = conn.execute("SELECT id, status::text AS status, correlation_id FROM documents")
    docs = {r["id"]: r for r in rows}
    assert docs[good.document_id]["status"] == "complete"
    assert docs[bad.document_id]["status"] == "failed"
    correlation = {str(i): str(r["correlation_id"]) for i, r in docs.items()}
    assert openai_emulator.stats.count(200) >= 1  # the key was used, so it could have leaked

    text = daemon.text()
    for secret in (MARKER, BAD_MARKER, API_KEY):
        leaked = [line for line in text.splitlines() if secret in line]
        assert not leaked, f"{secret!r} in the log:\n" + "\n".join(leaked[:5])

    lines = text.splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line[:300]!r}") from None
    assert all(isinstance(r, dict) for r in records)

    # Every line about a document carries that document's correlation id.
    about = [r for r in records if r.get("document_id") in correlation]
    assert about
    wrong = [r for r in about if r.get("correlation_id") != correlation[r["document_id"]]]
    assert not wrong, json.dumps(wrong[:5], indent=1)

    # Every line a worker writes inside a stage names the document(s) it works for, each
    # with its correlation id: one document, or every member of a group of small ones.
    def named(r: dict[str, Any]) -> dict[str, str]:
        if r.get("document_id") is not None:
            return {r["document_id"]: r.get("correlation_id")}
        return dict(zip(r.get("document_ids") or [], r.get("correlation_ids") or [], strict=True))

    in_stage = [r for r in records if r.get("role") == "worker" and r.get("stage") is not None]
    unbound = [
        r
        for r in in_stage
        if not named(r) or any(correlation.get(d) != c for d, c in named(r).items())
    ]
    assert not unbound, json.dumps(unbound[:5], indent=1)

    # ...and there are such lines for every stage of the good document, and for the
    # failure of the bad one (including the library's request lines during embedding).
    good_id = str(good.document_id)
    seen = {r["stage"] for r in in_stage if good_id in named(r)}
    assert set(STAGES) <= seen, seen
    assert any(
        good_id in named(r)
        and r["stage"] == "embedding"
        and r.get("logger", "").startswith("httpx")
        for r in in_stage
    ), "no request line from the HTTP client during embedding"
    failed = [r for r in in_stage if r["event"] == "document failed"]
    assert [r["document_id"] for r in failed] == [str(bad.document_id)]
    assert failed[0]["error_class"] == "invalid_input"
