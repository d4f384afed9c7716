"""The database goes away mid-run: every ingestd session terminated three times; the
embedded postmaster killed -9 (the supervisor, which owns the embedded server, starts it
again). Every document completes and the invariants hold."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from ingestd.shared.db.embedded import data_dir, embedded_url, release_embedded
from tests.chaos.daemon import Scene, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.db]

CORPUS = (40, 1)
OUTAGES = 3


def _complete(scene: Scene) -> int:
    return scene.counts().get("complete", 0)


def test_every_session_terminated_three_times(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    daemon = scene.start(env={"INGESTD_CRASH_LOOP_LIMIT": "5"})
    cut = 0
    for outage in range(OUTAGES):
        target = (outage + 1) * len(reference) // (OUTAGES + 2)
        wait_until(lambda t=target: _complete(scene) >= t, "progress", tail=daemon)
        with scene.conn() as c:
            row = c.execute(
                "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'ingestd%'"
            ).fetchone()
        cut += int(row["n"])
    assert cut >= OUTAGES
    assert daemon.wait() == 0, daemon.tail()
    crashed = [e for e in daemon.events("worker exited") if e.get("reason") != "shutdown"]
    assert crashed == [], crashed
    verify(reference, faults=f"{cut} sessions terminated in {OUTAGES} rounds")


def test_embedded_postmaster_killed_is_restarted_by_the_supervisor(
    scene: Scene, corpus: Path, reference: dict[str, int], verify: Callable[..., Any]
) -> None:
    del scene.env["INGESTD_DATABASE_URL"]  # the embedded server under this scene's home
    assert scene.cli("ingest", "-q", str(corpus)).returncode == 0
    daemon = scene.start()
    pgdata = data_dir(scene.home)

    def postmaster() -> psutil.Process | None:
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            return psutil.Process(pid)
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None

    # Read progress through the server the daemon started; joining it (as any ingestd
    # command does) keeps it up until this test lets go.
    scene.db_url = embedded_url(scene.home, "postgres")
    scene.releases.append(lambda: release_embedded(scene.home))
    wait_until(lambda: _complete(scene) >= 5, "progress before the kill", tail=daemon)
    old = postmaster()
    assert old is not None
    old.send_signal(signal.SIGKILL)
    killed = time.monotonic()

    def back() -> bool:
        new = postmaster()
        if new is None or new.pid == old.pid:
            return False
        try:
            return _complete(scene) >= 0
        except psycopg.OperationalError:  # still starting: polled again
            return False

    wait_until(back, "the embedded server back", tail=daemon)
    recover = time.monotonic() - killed
    assert daemon.wait() == 0, daemon.tail()
    assert daemon.events("embedded postgres restarted"), daemon.tail()
    summary = verify(reference, faults="embedded postmaster SIGKILL", recover_seconds=recover)
    assert summary["complete"] == len(reference)
