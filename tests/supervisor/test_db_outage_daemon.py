"""The daemon rides out database outages: every session of its database terminated
(as a server restart or a failover does), repeatedly, in the middle of a run. Workers
wait and reconnect instead of exiting as crashes (ten such deaths in a few seconds used
to trip the crash-loop limit and stop the supervisor), and every document completes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from ingestd.shared.exitcodes import EXIT_OK
from tests.supervisor.arbiter_support import ArbiterRun, wait_until

Start = Callable[..., ArbiterRun]
DOCUMENTS = 30
OUTAGES = 3

pytestmark = pytest.mark.db


def _complete(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) AS n FROM documents WHERE status = 'complete'").fetchone()
    return int(row["n"])


def _cut_every_other_session(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name LIKE 'ingestd-%'"
    ).fetchone()
    return int(row["n"])


def test_sessions_cut_mid_run_are_ridden_out_and_every_document_completes(
    start_arbiter: Start, conn: psycopg.Connection[Any], ingest_bytes: Callable[..., Any]
) -> None:
    for i in range(DOCUMENTS):
        body = " ".join(
            f"document {i} sentence {j} about databases going away." for j in range(400)
        )
        ingest_bytes(body.encode(), f"doc-{i}.txt")
    # Lower crash-loop limit than the fast default: ten worker deaths would stop it.
    run = start_arbiter(
        "real", workers=2, drain=True, heartbeat_timeout_seconds=30.0, crash_loop_limit=5
    )
    cut = 0
    for outage in range(OUTAGES):
        wait_until(
            lambda o=outage: _complete(conn) > o * DOCUMENTS // (OUTAGES + 1),
            f"progress before outage {outage + 1}",
            timeout=120,
            on_timeout=run.log_tail,
        )
        cut += _cut_every_other_session(conn)
    assert cut >= OUTAGES  # at least one live session each time

    assert run.wait_exit(timeout=180) == EXIT_OK
    assert _complete(conn) == DOCUMENTS
    exits = run.events("worker exited")
    assert exits and all(e["reason"] == "shutdown" for e in exits), exits
    missing = conn.execute("SELECT count(*) AS n FROM chunks WHERE embedding IS NULL").fetchone()[
        "n"
    ]
    assert missing == 0
    dupes = conn.execute(
        "SELECT count(*) AS n FROM (SELECT document_id, ordinal FROM chunks"
        " GROUP BY 1, 2 HAVING count(*) > 1) d"
    ).fetchone()["n"]
    assert dupes == 0
