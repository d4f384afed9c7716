"""Crashes: workers SIGKILLed again and again mid-run; the supervisor's whole process group
SIGKILLed and a new supervisor started. Every document completes, with the chunk counts
of a fault-free run, and the invariants hold."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.chaos.daemon import Daemon, Scene, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.db]

CORPUS = (60, 2)  # small mixed documents, large (> 1 MiB) ones
SEED = 1616
WORKER_KILLS = 6
LEASE_SECONDS = 4.0


def _leased_by(scene: Scene, pid: int) -> str | None:
    """The document a worker process holds, by its lease (worker_status names its owner)."""
    with scene.conn() as c:
        row = c.execute(
            "SELECT d.id::text AS id FROM worker_status w JOIN documents d"
            " ON d.lease_owner = w.owner WHERE w.pid = %s",
            (pid,),
        ).fetchone()
    return row["id"] if row else None


def _running_again(scene: Scene, doc: str, dead_owner_pid: int) -> bool:
    with scene.conn() as c:
        row = c.execute(
            "SELECT d.status::text AS status, w.pid FROM documents d"
            " LEFT JOIN worker_status w ON w.owner = d.lease_owner WHERE d.id = %s",
            (doc,),
        ).fetchone()
    if row["status"] in ("complete", "failed", "dead"):
        return True
    return row["pid"] is not None and row["pid"] != dead_owner_pid


def _busy_worker(daemon: Daemon, scene: Scene, rng: random.Random) -> tuple[psutil.Process, str]:
    def pick() -> tuple[psutil.Process, str] | None:
        workers = daemon.workers()
        rng.shuffle(workers)
        for proc in workers:
            doc = _leased_by(scene, proc.pid)
            if doc is not None:
                return proc, doc
        return None

    return wait_until(pick, "a worker holding a document", tail=daemon)


def test_workers_sigkilled_repeatedly_lose_nothing(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    rng = random.Random(SEED)
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    # A death while a worker holds a document is charged to that document: killing the
    # same one max_attempts times ends it dead, rightly (a large one is in flight longest,
    # so random kills find it often). More attempts than kills keeps that out of scope.
    daemon = scene.start(
        env={"INGESTD_WORKERS": "2", "INGESTD_MAX_ATTEMPTS": str(WORKER_KILLS + 1)}
    )
    recoveries: list[float] = []
    for _ in range(WORKER_KILLS):
        if daemon.proc.poll() is not None:
            break
        try:
            proc, doc = _busy_worker(daemon, scene, rng)
        except AssertionError:
            break  # the run finished before every kill was spent
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda d=doc, p=proc.pid: _running_again(scene, d, p), "the document again")
        recoveries.append(time.monotonic() - killed)
    assert daemon.wait() == 0, daemon.tail()
    assert len(recoveries) >= 3, "the run ended before enough workers were killed"
    killed_exits = [e for e in daemon.events("worker exited") if e.get("signal") == "SIGKILL"]
    assert len(killed_exits) == len(recoveries)
    summary = verify(
        reference, faults=f"{len(recoveries)} worker SIGKILLs", recover_seconds=max(recoveries)
    )
    assert summary["complete"] == len(reference)
    # With the supervisor up, a dead worker's document runs again in about a second.
    assert max(recoveries) < 10.0, recoveries


def test_supervisor_group_sigkilled_a_new_one_finishes_within_a_lease(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    lease = {"INGESTD_LEASE_SECONDS": str(LEASE_SECONDS)}
    first = scene.start(env=lease)

    def some_done() -> bool:
        return scene.counts().get("complete", 0) >= 10

    wait_until(some_done, "progress before the kill", tail=first)
    _busy_worker(first, scene, random.Random(SEED))
    first.kill_group()  # the host died: supervisor, workers, HTTP child at once
    killed = time.monotonic()
    with scene.conn() as c:
        held = c.execute("SELECT count(*) AS n FROM documents WHERE lease_owner IS NOT NULL")
        orphaned = int(held.fetchone()["n"])
    assert orphaned >= 1, "the kill caught no document mid-work"
    second = scene.start(env=lease)

    def orphans_resumed() -> bool:
        with scene.conn() as c:
            row = c.execute(
                "SELECT count(*) AS n FROM documents WHERE lease_owner IS NOT NULL"
                " AND lease_owner NOT LIKE %s",
                (f"%:{second.pid}:%",),
            ).fetchone()
        return row["n"] == 0

    wait_until(orphans_resumed, "the dead supervisor's leases taken over", tail=second)
    recover = time.monotonic() - killed
    assert second.wait() == 0, second.tail()
    summary = verify(reference, faults="supervisor group SIGKILL", recover_seconds=recover)
    assert summary["complete"] == len(reference)
    # Recovery within one lease period (plus the new supervisor's start-up).
    assert recover < LEASE_SECONDS + 15.0, recover
