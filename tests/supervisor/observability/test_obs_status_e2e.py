"""Status, end to end: ``ingestd status --json``, ``GET /v1/status`` of the running daemon's
HTTP child and the database itself say the same thing, during a run and after it."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.ingest import IngestResult
from ingestd.shared.states import TERMINAL, Status
from tests.emulators.openai_api import DEFAULT_API_KEY
from tests.supervisor.http.http_harness import ADMIN_TOKEN, add_token
from tests.supervisor.observability.obs_support import Daemon, cli_json, free_port, wait_until

N_DOCS = 6
# Each embedding request takes this long, so the run lasts several seconds after the
# first document completes: ample margin for the mid-run snapshot below.
LATENCY = 0.5
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        # /v1 needs an API token (the test stores ADMIN_TOKEN); the probes do not.
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with _NO_PROXY.open(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except OSError:
        return 0, None


def _db_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    counts = {str(s): 0 for s in Status}
    for row in conn.execute(
        "SELECT status::text AS status, count(*) AS n FROM documents GROUP BY status"
    ):
        counts[row["status"]] = row["n"]
    return counts


def _workers(status: dict[str, Any]) -> set[tuple[str, int, int]]:
    return {(w["supervisor"], w["slot"], w["pid"]) for w in status["workers"]}


def _queue(status: dict[str, Any]) -> dict[str, Any]:
    # The age of the oldest runnable document is measured at the moment of asking.
    return {k: v for k, v in status["queue"].items() if k != "oldest_runnable_age_seconds"}


def test_cli_http_and_database_agree(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    openai_emulator: Any,
    ingest_bytes: Callable[..., IngestResult],
    conn: psycopg.Connection[Any],
    db_url: str,
) -> None:
    for i in range(N_DOCS):
        ingest_bytes(
            f"# Note {i}\n\nStatus check document number {i}.\n".encode(),
            f"n{i}.md",
            "text/markdown",
        )
    conn.execute("DELETE FROM api_tokens")
    add_token(conn, ADMIN_TOKEN)
    openai_emulator.config.latency = LATENCY
    port = free_port()
    env = {
        **daemon_env,
        "INGESTD_WORKERS": "2",
        # One document per claim: documents complete one by one, so there is a mid-run.
        "INGESTD_CLAIM_BATCH": "1",
        "INGESTD_HTTP_PORT": str(port),
        "INGESTD_EMBEDDER": "openai",
        "INGESTD_EMBEDDING_DIMENSIONS": "256",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": openai_emulator.base_url,
    }
    daemon = start_daemon(env, "run")
    wait_until(lambda: _get(port, "/healthz")[0] == 200, "the HTTP child", on_timeout=daemon.tail)
    wait_until(lambda: _get(port, "/readyz")[0] == 200, "readiness", on_timeout=daemon.tail)

    # Mid-run: as soon as one document is complete, freeze the documents table (a SHARE
    # lock blocks the workers' updates, not readers) and take all three views.
    wait_until(
        lambda: _db_counts(conn)["complete"] >= 1,
        "a first complete document",
        on_timeout=daemon.tail,
    )
    with psycopg.connect(db_url, row_factory=dict_row) as frozen:
        frozen.execute("LOCK TABLE documents IN SHARE MODE")
        db = _db_counts(frozen)
        code, http = _get(port, "/v1/status")
        cli = cli_json(daemon.env, "status", "--json")
        frozen.rollback()
    assert code == 200
    assert sum(db.values()) == N_DOCS
    assert any(db[str(s)] for s in Status if s not in TERMINAL), f"not mid-run: {db}"
    assert http["documents"] == cli["documents"] == db
    assert _queue(http) == _queue(cli)
    assert _workers(http) == _workers(cli)
    assert {w[0] for w in _workers(http)} == {s["supervisor"] for s in http["supervisors"]}
    assert len(_workers(http)) == 2

    # While it runs, each view is a consistent snapshot: every document counted once.
    def consistent_until_done() -> bool:
        code, http = _get(port, "/v1/status")
        assert code == 200
        assert sum(http["documents"].values()) == N_DOCS, http["documents"]
        return bool(http["documents"]["complete"] == N_DOCS)

    wait_until(consistent_until_done, "every document complete", on_timeout=daemon.tail)

    # Quiescent: all three agree on everything that is not a clock reading.
    cli = cli_json(daemon.env, "status", "--json")
    code, http = _get(port, "/v1/status")
    db = _db_counts(conn)
    assert code == 200
    assert http["documents"] == cli["documents"] == db
    assert db["complete"] == N_DOCS
    assert http["queue"] == cli["queue"]
    assert http["queue"]["runnable"] == http["queue"]["leased"] == 0
    assert http["throughput"] == cli["throughput"]
    assert http["throughput"]["completed_last_1m"] == N_DOCS
    assert _workers(http) == _workers(cli)

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == EXIT_OK, daemon.tail()
