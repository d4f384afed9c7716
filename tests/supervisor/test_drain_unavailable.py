"""``ingestd run --drain`` against an embedding API that is unreachable, for good or for a
while: it always ends, says why in one line, and loses nothing.

Real processes throughout: the ``ingestd`` command (supervisor and a forked worker), the
test PostgreSQL, and the OpenAI emulator or a closed loopback port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingestd.shared.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE
from tests.emulators.openai_api import DEFAULT_API_KEY, OpenAIFault
from tests.shared.resilience.test_classify_network import closed_port

ROOT = Path(__file__).resolve().parents[2]
# A safety net only: each run ends by itself, in seconds (or in one breaker reset).
TIMEOUT = 180.0
TEXT = b"The embedding API is down; the documents must still end somewhere. " * 20


def _env(cli_env: dict[str, str], base_url: str, **settings: str) -> dict[str, str]:
    env = {**cli_env}
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        env.pop(var, None)
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        OPENAI_API_KEY=DEFAULT_API_KEY,
        OPENAI_BASE_URL=base_url,
        INGESTD_EMBEDDER="openai",
        INGESTD_EMBEDDING_DIMENSIONS="256",
        INGESTD_WORKERS="1",
        INGESTD_HTTP_PORT="0",
        INGESTD_LOG_JSON="true",
        INGESTD_RETRY_BASE_SECONDS="0.01",
        INGESTD_RETRY_MAX_SECONDS="0.05",
        INGESTD_DRAIN_TIMEOUT_SECONDS="20",
    )
    env.update({f"INGESTD_{k.upper()}": v for k, v in settings.items()})
    return env


def _drain(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "run", "--drain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("ingestd: ")]
    assert lines, done.stderr[-3000:]
    return lines[-1]


def _docs(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT status, attempts, lease_owner, error_class, error_message, waiting_since,"
        " waiting_for FROM documents ORDER BY created_at"
    ).fetchall()


@pytest.fixture
def three_documents(ingest_bytes: Callable[..., Any]) -> None:
    for i in range(3):
        ingest_bytes(TEXT + f"document {i}".encode(), f"doc{i}.txt")


@pytest.mark.usefixtures("three_documents")
def test_an_api_gone_for_good_ends_the_drain_with_3_and_the_true_error(
    cli_env: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    port = closed_port()
    env = _env(cli_env, f"http://127.0.0.1:{port}/v1", drain_blocked_seconds="1")

    done = _drain(env)

    assert done.returncode == EXIT_UNREACHABLE, done.stderr[-3000:]
    line = _last_line(done)
    assert line.startswith("ingestd: drain stopped: 3 documents waiting on openai")
    assert f"embedding API unreachable at http://127.0.0.1:{port}: connection refused" in line
    assert "they stay queued" in line
    docs = _docs(conn)
    assert len(docs) == 3
    for doc in docs:
        # Still queued (resting before the embed stage), nothing leased, nothing lost.
        assert doc["status"] == "chunked" and doc["lease_owner"] is None
        assert doc["error_class"] == "circuit_open"
        assert (
            f"unreachable at http://127.0.0.1:{port}: connection refused" in (doc["error_message"])
        )
        assert "timed out" not in doc["error_message"]
        assert DEFAULT_API_KEY not in doc["error_message"]
        assert doc["waiting_since"] is not None and doc["waiting_for"] == "openai"
        # Only the requests before the breaker opened cost an attempt.
        assert doc["attempts"] <= 1


@pytest.mark.usefixtures("three_documents")
def test_past_the_horizon_the_documents_end_dead_and_the_drain_exits_1(
    cli_env: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    port = closed_port()
    env = _env(
        cli_env,
        f"http://127.0.0.1:{port}/v1",
        service_wait_horizon_seconds="0.3",
        # Far longer than the horizon: the drain must end because the documents did.
        drain_blocked_seconds="120",
    )

    done = _drain(env)

    assert done.returncode == EXIT_FAILED, done.stderr[-3000:]
    line = _last_line(done)
    assert line.startswith(
        "ingestd: drain finished, but 3 documents ended dead after waiting past the horizon"
        " for openai"
    )
    for doc in _docs(conn):
        assert (doc["status"], doc["error_class"]) == ("dead", "circuit_open")
        assert doc["error_message"].startswith("waited ")
        assert (
            "s for openai, past the 0.3 s horizon; last error: openai: embedding API"
            in (doc["error_message"])
        )
        assert "connection refused" in doc["error_message"]
        assert doc["attempts"] <= 1, "waiting spends no attempt: the horizon ended it"


@pytest.mark.usefixtures("three_documents")
def test_an_outage_that_ends_before_the_horizon_loses_nothing(
    cli_env: dict[str, str], conn: psycopg.Connection[Any], openai_emulator: Any
) -> None:
    # Enough 503s in a row to open the worker's breaker (5): the documents then wait on
    # it until its trial call (after its 30 s reset) finds the service back.
    openai_emulator.inject(OpenAIFault.UNAVAILABLE, times=5)
    env = _env(cli_env, openai_emulator.base_url, service_wait_horizon_seconds="600")

    done = _drain(env)

    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert openai_emulator.stats.status_counts[503] == 5
    docs = _docs(conn)
    assert [d["status"] for d in docs] == ["complete"] * 3
    assert all(d["waiting_since"] is None and d["attempts"] <= 1 for d in docs)
    waited = conn.execute(
        "SELECT count(*) AS n FROM document_events"
        " WHERE event = 'retry_scheduled' AND error_class = 'circuit_open'"
    ).fetchone()
    assert waited is not None and waited["n"] >= 1, "the documents did wait on the breaker"
