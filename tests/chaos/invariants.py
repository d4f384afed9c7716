"""What must hold in the database (and on the host) after every scenario, whatever was
done to the daemon: ``check`` returns the violations (a test asserts there are none)
and a summary row for the report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg

from ingestd.shared.db.space import current_space
from ingestd.shared.states import ACTIVE_OF, TERMINAL
from tests import polling
from tests.chaos.daemon import iter_lines

RESTING = frozenset(str(s) for s in ACTIVE_OF)
ACTIVE = frozenset(str(s) for s in ACTIVE_OF.values())
ENDED = frozenset(str(s) for s in TERMINAL)
# The reaper checks every second; a postmaster's fast shutdown takes a moment more.
LEFTOVER_GRACE_SECONDS = 15.0


def check(
    conn: psycopg.Connection[Any],
    *,
    reference: Mapping[str, int] | None,
    secrets: Sequence[str],
    logs: Sequence[Path],
) -> tuple[list[str], dict[str, Any]]:
    """``reference``: chunk count per file name from a fault-free run of the same files.
    Processes left behind are ``leftovers``' to find, once this connection is closed."""
    violations: list[str] = []
    docs = conn.execute(
        "SELECT d.id, d.filename, d.status::text AS status, d.attempts, d.error_class,"
        " d.error_message, d.lease_owner, d.lease_expires_at < now() AS lease_expired,"
        " (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks"
        " FROM documents d"
    ).fetchall()
    for d in docs:
        name = repr(d["filename"])
        if d["status"] in ACTIVE and d["lease_owner"] is None:
            violations.append(f"{name} is {d['status']} without a lease")
        if d["lease_owner"] is not None and d["lease_expired"]:
            violations.append(f"{name} is {d['status']} under an expired lease")
        if d["status"] not in RESTING | ACTIVE | ENDED:
            violations.append(f"{name} has unknown status {d['status']}")
        if d["status"] in ("failed", "dead"):
            if not d["error_class"] or not d["error_message"]:
                violations.append(f"{name} is {d['status']} without error_class/message")
            if d["attempts"] < 1 and d["error_class"] != "invalid_input":
                # An input refused before any work may end without spending an attempt.
                violations.append(f"{name} is {d['status']} with no attempt recorded")
        if reference is not None and d["filename"] in reference:
            want = reference[d["filename"]]
            if d["status"] == "complete" and d["chunks"] != want:
                violations.append(f"{name}: {d['chunks']} chunks, the reference run {want}")
            if d["status"] in ("failed", "dead") and want > 0:
                violations.append(
                    f"{name} ended {d['status']} ({d['error_class']}:"
                    f" {(d['error_message'] or '')[:160]!r}, {d['attempts']} attempts)"
                    " but completed in the reference run"
                )
    dupes = conn.execute(
        "SELECT count(*) AS n FROM (SELECT document_id, ordinal FROM chunks"
        " GROUP BY 1, 2 HAVING count(*) > 1) x"
    ).fetchone()
    if dupes["n"]:
        violations.append(f"{dupes['n']} (document, ordinal) pairs stored more than once")
    space = current_space(conn)
    if space is not None:
        bad = conn.execute(
            "SELECT count(*) FILTER (WHERE c.embedding IS NULL) AS nulls,"
            " count(*) FILTER (WHERE vector_dims(c.embedding) <> %s) AS wrong_dims,"
            " count(*) FILTER (WHERE vector_norm(c.embedding) = 0) AS zeros"
            " FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.status = 'complete'",
            (space.dimensions,),
        ).fetchone()
        for what in ("nulls", "wrong_dims", "zeros"):
            if bad[what]:
                violations.append(f"{bad[what]} vectors of complete documents: {what}")
    violations += _secrets_in(conn, secrets, logs)
    counts = {s: sum(1 for d in docs if d["status"] == s) for s in ("complete", "failed", "dead")}
    summary = {
        "documents": len(docs),
        **counts,
        "unfinished": len(docs) - sum(counts.values()),
        "chunks": sum(int(d["chunks"]) for d in docs),
        "violations": len(violations),
    }
    return violations, summary


def _secrets_in(
    conn: psycopg.Connection[Any], secrets: Sequence[str], logs: Sequence[Path]
) -> list[str]:
    found = []
    wanted = [s for s in secrets if s]
    for line in iter_lines(list(logs)):
        for secret in wanted:
            if secret in line:
                found.append(f"a secret ({secret[:4]}…) in a log line: {line[:120]!r}")
    for table, column in (("documents", "error_message"), ("document_events", "message")):
        rows = conn.execute(f"SELECT {column} AS text FROM {table} WHERE {column} IS NOT NULL")
        for row in rows:
            for secret in wanted:
                if secret in row["text"]:
                    found.append(f"a secret ({secret[:4]}…) in {table}.{column}")
    return found


def leftovers(home: Path) -> list[str]:
    """ingestd processes still alive: the test's children, and anything (a postmaster,
    a reaper) whose command line names this scenario's INGESTD_HOME."""

    def alive() -> list[str]:
        me = psutil.Process(os.getpid())
        found = []
        candidates = {p.pid: p for p in me.children(recursive=True)}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if str(home) in " ".join(proc.info["cmdline"] or ()):
                candidates[proc.pid] = proc
        for pid, proc in candidates.items():
            try:
                cmd = " ".join(proc.cmdline())
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except psutil.Error:
                continue
            if "ingestd" in cmd or "postgres" in cmd or str(home) in cmd:
                found.append(f"left behind: pid {pid} {cmd[:100]!r}")
        return found

    try:
        polling.wait_until(lambda: not alive(), "no process left behind", LEFTOVER_GRACE_SECONDS)
    except AssertionError:
        return alive()
    return []


def summary_line(scenario: str, summary: Mapping[str, Any]) -> str:
    cells = [scenario] + [f"{k}={v}" for k, v in summary.items()]
    return " | ".join(cells)
