"""Scale-out: two ``ingestd run`` daemons (as two hosts would run them: separate state
directories, one database) share one queue. Every document is done exactly once, by
whichever worker claimed it, and both daemons take part."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import psycopg

from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.ingest import IngestResult
from tests.supervisor.observability.obs_support import Daemon, wait_until

N_DOCS = 60
WORKERS = 2


def test_two_supervisors_share_one_queue(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    ingest_bytes: Callable[..., IngestResult],
    conn: psycopg.Connection[Any],
    tmp_path: Any,
) -> None:
    daemons = [
        start_daemon(
            {
                **daemon_env,
                "INGESTD_HOME": str(tmp_path / f"host{i}"),
                "INGESTD_WORKERS": str(WORKERS),
            },
            "run",
        )
        for i in range(2)
    ]

    def all_heartbeating() -> bool:
        rows = conn.execute(
            "SELECT supervisor, count(*) AS n FROM worker_status"
            " WHERE heartbeat_at IS NOT NULL GROUP BY supervisor"
        ).fetchall()
        mine = {f":{d.pid}" for d in daemons}
        ready = {r["supervisor"][r["supervisor"].rindex(":") :] for r in rows if r["n"] == WORKERS}
        return mine <= ready

    wait_until(
        all_heartbeating,
        "both daemons' workers to heartbeat",
        on_timeout=lambda: "\n".join(d.tail(30) for d in daemons),
    )

    # Enqueued while both are idle and listening: all four workers compete for them.
    ids = []
    for i in range(N_DOCS):
        text = f"# Item {i}\n\nShared queue entry {i}: {'alpha beta gamma ' * (i % 5 + 1)}\n"
        result = ingest_bytes(text.encode(), f"item{i}.md", "text/markdown")
        assert result.created
        ids.append(result.document_id)

    def finished() -> bool:
        row = conn.execute(
            "SELECT count(*) AS n FROM documents WHERE status = ANY(%s)",
            (["complete", "failed", "dead"],),
        ).fetchone()
        return row is not None and row["n"] == N_DOCS

    wait_until(
        finished,
        "every document to finish",
        on_timeout=lambda: "\n".join(d.tail(30) for d in daemons),
    )
    for d in daemons:
        d.proc.send_signal(signal.SIGTERM)
    for d in daemons:
        assert d.wait_exit() == EXIT_OK, d.tail()

    statuses = conn.execute(
        "SELECT status::text AS s, count(*) AS n FROM documents GROUP BY status"
    ).fetchall()
    assert {r["s"]: r["n"] for r in statuses} == {"complete": N_DOCS}

    # Claimed exactly once each: no document was taken by two workers, none retried.
    claims = conn.execute(
        "SELECT document_id, count(*) AS n, min(worker) AS worker FROM document_events"
        " WHERE event = 'claimed' GROUP BY document_id"
    ).fetchall()
    assert len(claims) == N_DOCS
    assert all(c["n"] == 1 for c in claims), [c for c in claims if c["n"] != 1]
    errors = conn.execute(
        "SELECT count(*) AS n FROM document_events WHERE error_class IS NOT NULL"
    ).fetchone()
    assert errors is not None and errors["n"] == 0

    # No duplicate chunks; every chunk embedded; each document's counters match.
    dupes = conn.execute(
        "SELECT document_id, ordinal FROM chunks GROUP BY document_id, chunker,"
        " chunker_version, ordinal HAVING count(*) > 1"
    ).fetchall()
    assert dupes == []
    mismatched = conn.execute(
        "SELECT d.id FROM documents d LEFT JOIN chunks c ON c.document_id = d.id"
        " GROUP BY d.id, d.chunks_total, d.chunks_embedded"
        " HAVING count(c.*) <> d.chunks_total OR count(c.embedding) <> d.chunks_total"
        " OR d.chunks_embedded <> d.chunks_total OR count(c.*) = 0"
    ).fetchall()
    assert mismatched == []

    # Both daemons worked: lease owners are "host:supervisor_pid:slot:generation".
    by_supervisor: dict[int, int] = {}
    for c in claims:
        pid = int(c["worker"].split(":")[-3])
        by_supervisor[pid] = by_supervisor.get(pid, 0) + 1
    assert set(by_supervisor) == {d.pid for d in daemons}, by_supervisor
