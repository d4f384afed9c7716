"""The parts the arbiter delegates to, each on its own: judgements about a child
(``watch``), what is published (``publish``), the database handle (``database``), and
what a death means for a dead worker's documents (``deaths``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from ingestd.shared.channel import ChannelReader
from ingestd.shared.db import jobs
from ingestd.shared.db.connect import database_url
from ingestd.shared.exitcodes import EXIT_CRASH
from ingestd.shared.ingest import IngestResult
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor import reload, watch
from ingestd.supervisor.children import Child, Death, Kind, Reason
from ingestd.supervisor.database import STATEMENT_TIMEOUT_MS, SupervisorDatabase, bounded
from ingestd.supervisor.deaths import Deaths
from ingestd.supervisor.publish import Publisher, View, worst_breakers


def make_child(kind: Kind = Kind.WORKER, slot: int = 1, owner: str = "h:1:1:7") -> Child:
    r, w = os.pipe()
    os.close(w)
    return Child(
        kind=kind,
        slot=slot,
        pid=4242 + slot,
        owner=owner,
        generation=7,
        reader=ChannelReader(r),
        started=100.0,
        started_at=datetime.now(UTC),
        settings_version=0,
        stage_since=100.0,
    )


@pytest.fixture
def child() -> Iterator[Child]:
    c = make_child()
    yield c
    os.close(c.reader.fd)


class Limits:
    heartbeat_timeout_seconds = 10.0
    stage_deadline_seconds = 60.0


LIMITS: Any = Limits()


# -- watch ---------------------------------------------------------------------------------


def test_a_heartbeat_older_than_the_timeout_is_stale(child: Child) -> None:
    child.on_message({"doc": None, "stage": None}, now=100.0)
    assert watch.stale_heartbeat(child, 110.0, LIMITS) is None
    detail = watch.stale_heartbeat(child, 110.5, LIMITS)
    assert detail == "no heartbeat for 10.5s (timeout 10.0s)"


def test_the_http_child_is_held_to_heartbeats_once_it_sent_one() -> None:
    http = make_child(Kind.HTTP, slot=0)
    try:
        assert watch.stale_heartbeat(http, 1000.0, LIMITS) is None
        http.on_message({}, now=100.0)
        assert watch.stale_heartbeat(http, 1000.0, LIMITS) is not None
        http.on_message({"doc": "d", "stage": "parsing"}, now=100.0)
        assert watch.past_stage_deadline(http, 1000.0, LIMITS) is None  # workers only
    finally:
        os.close(http.reader.fd)


def test_a_stage_that_runs_past_its_deadline_is_named(child: Child) -> None:
    child.on_message({"doc": "abc", "stage": "embedding"}, now=100.0)
    assert watch.past_stage_deadline(child, 160.0, LIMITS) is None
    detail = watch.past_stage_deadline(child, 161.0, LIMITS)
    assert detail == "stage embedding of document abc ran 61.0s (deadline 60.0s)"


def test_recycling_is_due_by_documents_or_by_age(child: Child) -> None:
    child.recycle_after_documents, child.recycle_at = 3, 200.0
    child.documents_done = 2
    assert watch.recycle_due(child, 150.0) is None
    child.documents_done = 3
    assert watch.recycle_due(child, 150.0) == "3 documents done"
    child.documents_done = 0
    assert watch.recycle_due(child, 200.0) == "100s old"


def test_a_child_whose_end_is_decided_is_not_unclaimed(child: Child) -> None:
    assert watch.unclaimed(child)
    child.stop_reason = Reason.RECYCLE
    assert not watch.unclaimed(child)
    child.stop_reason, child.kill_reason = None, Reason.MEMORY
    assert not watch.unclaimed(child)


# -- reload order --------------------------------------------------------------------------


def test_a_reload_replaces_one_child_at_a_time_workers_first() -> None:
    w0, w1, http = make_child(slot=0), make_child(slot=1), make_child(Kind.HTTP, slot=0)
    new_w0 = make_child(slot=0)
    try:
        assert reload.to_replace([http, w1, w0], target=2, version=1) == [w0, w1, http]
        w0.stop_reason = Reason.RELOAD  # being replaced: nothing else goes meanwhile
        assert reload.to_replace([http, w1, w0], target=2, version=1) is None
        new_w0.settings_version = 1  # its successor, not heartbeating yet
        assert reload.to_replace([http, w1, new_w0], target=2, version=1) is None
        new_w0.on_message({}, now=101.0)
        assert reload.to_replace([http, w1, new_w0], target=2, version=1) == [w1, http]
        assert reload.to_replace([new_w0], target=1, version=1) == []  # finished
    finally:
        for c in (w0, w1, http, new_w0):
            os.close(c.reader.fd)


# -- publish -------------------------------------------------------------------------------


def view(children: list[Child], **overrides: Any) -> View:
    fields: dict[str, Any] = {
        "supervisor": "h:1",
        "pid": 1,
        "host": "h",
        "started_at": datetime.now(UTC),
        "state": "running",
        "target": 2,
        "drain": False,
        "reloading": False,
        "settings_version": 0,
        "children": children,
        "restarts": {},
        "pending_releases": 0,
        "config_path": None,
    }
    return View(**{**fields, **overrides})


def test_the_status_line_counts_workers_and_says_what_is_unusual(child: Child) -> None:
    publisher = Publisher(SupervisorDatabase(), Metrics(None, role="supervisor"))
    publisher.refresh_status_line(view([child]))
    assert publisher.status_line == "1/2 workers"
    publisher.refresh_status_line(view([child], state="draining", reloading=True))
    assert publisher.status_line == "1/2 workers; draining; reloading"


def test_each_breaker_is_published_as_the_worst_worker_sees_it() -> None:
    a, b = make_child(slot=0), make_child(slot=1)
    try:
        a.breakers = {"openai": "open", "llamaparse": "closed"}
        b.breakers = {"openai": "half_open", "llamaparse": "half_open"}
        assert worst_breakers([a, b]) == {"openai": "open", "llamaparse": "half_open"}
    finally:
        os.close(a.reader.fd)
        os.close(b.reader.fd)


# -- database ------------------------------------------------------------------------------


def test_the_supervisors_connections_are_bounded() -> None:
    params = conninfo.conninfo_to_dict(bounded("host=h dbname=db options='-c work_mem=8MB'"))
    assert params["options"] == f"-c work_mem=8MB -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    assert int(params["connect_timeout"]) > 0 and int(params["tcp_user_timeout"]) > 0
    assert (
        conninfo.conninfo_to_dict(bounded("postgresql://h/db?connect_timeout=2"))["connect_timeout"]
        == "2"
    )


def test_a_repeated_database_error_is_logged_once_with_a_count_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = SupervisorDatabase("postgresql:///unused")
    caplog.set_level(logging.ERROR, logger="ingestd.supervisor")
    for _ in range(3):
        db.error("publishing status", psycopg.OperationalError("server closed\ndetail"))
    db.error("drain check", psycopg.OperationalError("server closed"))
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [(e["event"], e["during"]) for e in logged] == [
        ("database error", "publishing status"),
        ("database error", "drain check"),
    ]
    assert logged[0]["error"] == "server closed"  # the first line only


# -- deaths --------------------------------------------------------------------------------


class FlakyDatabase(SupervisorDatabase):
    """The supervisor's handle to a database that can be made unreachable."""

    down = False

    def conn(self) -> psycopg.Connection[Any]:
        if self.down:
            raise psycopg.OperationalError("connection refused (the test took it down)")
        return super().conn()


def test_a_dead_workers_documents_wait_for_the_database_and_are_released_when_it_is_back(
    make_settings: Callable[..., Settings],
    conn: psycopg.Connection[Any],
    ingest_bytes: Callable[..., IngestResult],
) -> None:
    settings = make_settings(max_attempts=3)
    doc = ingest_bytes(b"hello supervisor").document_id
    owner = "host:1:0:1"
    claimed = jobs.claim(conn, owner, limit=1, lease_seconds=60.0)
    assert [c.id for c in claimed] == [doc]
    db = FlakyDatabase(database_url(settings))
    deaths = Deaths(db, settings, Metrics(None, role="supervisor"))
    worker = make_child(owner=owner)
    try:
        db.down = True
        deaths.record(worker, Death(Reason.CRASH, EXIT_CRASH, None, "crashed"), lifetime=1.0)
        assert deaths.pending == 1
        deaths.retry()
        assert deaths.pending == 1
        row = conn.execute("SELECT lease_owner FROM documents WHERE id = %s", (doc,)).fetchone()
        assert row is not None and row["lease_owner"] == owner

        db.down = False
        deaths.retry()
        assert deaths.pending == 0
        row = conn.execute(
            "SELECT lease_owner, attempts, error_class FROM documents WHERE id = %s", (doc,)
        ).fetchone()
        assert row is not None
        assert (row["lease_owner"], row["attempts"], row["error_class"]) == (None, 1, "crash")
        assert deaths.restarts == {"crash": 1}
    finally:
        db.close()
        os.close(worker.reader.fd)
