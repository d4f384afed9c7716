"""The worker: claim → drive what was claimed through the stages → next claim.

Shared-nothing: parallelism comes from processes, and within the embed stage
from requests in flight. A claim may take several small documents; fresh ones
travel through the stages together as one run, anything else as a run of one
(workers/drive.py, where every way a run can end is handled).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.db import documents, jobs
from ingestd.shared.db.connect import connect
from ingestd.shared.embedders.base import Embedder
from ingestd.shared.errors import first_line
from ingestd.shared.resilience.backoff import Backoff
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.context import Member, StageContext, StopFlag
from ingestd.workers.drive import drive, groupable
from ingestd.workers.maintenance import IndexMaintainer, maybe_build_index
from ingestd.workers.recording import memray_recording

log = get_logger("ingestd.worker")

T = TypeVar("T")
# Waiting for a database that went away: quick at first (a restart takes about a
# second), then no more than one reconnect per worker every 30 s.
DATABASE_BACKOFF = Backoff(base=0.5, cap=30.0)
# admin_shutdown, crash_shutdown, cannot_connect_now, and class 08 (connection exceptions).
_SERVER_GOING_AWAY = frozenset(
    {"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006", "08007", "08P01"}
)


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        url: str,
        owner: str,
        slot: int = 0,
        metrics: Metrics | None = None,
        channel: WorkerChannel | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
        set_title: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.owner = owner
        self.slot = slot
        self.metrics = metrics or Metrics(None, role="worker", slot=slot)
        self.channel = channel or WorkerChannel(None)
        self.embedder_factory = embedder_factory
        self.stop = StopFlag()
        self.profile_next: Path | None = None
        self.documents_done = 0
        self._set_title = set_title or (lambda _t: None)
        self._conn: psycopg.Connection[Any] | None = None
        self.maintainer = IndexMaintainer(url, min_rows=settings.index_min_rows)
        self._listener: psycopg.Connection[Any] | None = None

    # -- connections ----------------------------------------------------------

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.url, autocommit=True, application_name=f"ingestd-worker-{self.slot}"
            )
            documents.relax_commits(self._conn)
        return self._conn

    def _wait_for_work(self, timeout: float) -> None:
        """Sleep until a NOTIFY says work arrived, or ``timeout`` passes (lost notifications)."""
        if self._listener is None or self._listener.closed:
            self._listener = connect(
                self.url, autocommit=True, application_name=f"ingestd-listen-{self.slot}"
            )
            documents.listen_for_work(self._listener)
        for _ in self._listener.notifies(timeout=timeout, stop_after=1):
            pass

    def close(self) -> None:
        for c in (self._conn, self._listener):
            if c is not None and not c.closed:
                c.close()

    def prepare(self) -> None:
        """Refuse to work in an embedding space other than the database's."""
        from ingestd.shared.db.space import ensure_space
        from ingestd.shared.embedders.setup import space_for

        ensure_space(self.conn, space_for(self.settings))

    # -- the loop -------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> int:
        """Work until asked to stop (or, with ``until_idle``, until nothing is runnable).

        A lost database connection is an outage to ride out, not a crash: the worker
        waits with backoff (heartbeating, so the supervisor keeps it), reconnects, gives
        back what it held without charging an attempt, and goes on. Exiting instead made
        every worker of the host die together, which the supervisor took for a crash loop.
        """
        self._riding_out_outages(self.prepare)
        self._set_title("idle")
        self._next_reap = 0.0
        while not self.stop.graceful:
            if not self._riding_out_outages(lambda: self._step(until_idle)):
                break
        self._set_title("stopping")
        self.channel.beat(event="stopping")
        return 0

    def _step(self, until_idle: bool) -> bool:
        """One claim and the runs it makes; False when the loop should end."""
        self.channel.beat()
        now = time.monotonic()
        if now >= self._next_reap:
            # Expired leases are looked for on a timer, not on every claim.
            self._next_reap = now + max(self.settings.lease_seconds / 4, 0.05)
            expired = jobs.reap_expired(self.conn, max_attempts=self.settings.max_attempts)
            if expired:
                self.metrics.incr("leases.expired", expired)
        claimed = jobs.claim(
            self.conn,
            self.owner,
            limit=self.settings.claim_batch,
            lease_seconds=self.settings.lease_seconds,
            max_bytes=self.settings.claim_max_bytes,
        )
        if not claimed:
            if until_idle:
                maybe_build_index(self.url, min_rows=self.settings.index_min_rows)
                return False
            self.maintainer.poke(now)
            # Wake at least every second to heartbeat while idle.
            self._wait_for_work(min(self.settings.poll_seconds, 1.0))
            return True
        runs = self._runs(claimed)
        for i, run in enumerate(runs):
            if self.stop.graceful:
                for rest in runs[i:]:
                    for c in rest:
                        jobs.release(self.conn, c.id, self.owner, reason=self.stop.reason)
                break
            self.process(run)
        return True

    def _riding_out_outages(self, work: Callable[[], T]) -> T | None:
        """``work()``, again after each database outage it meets; None if asked to stop
        while the database was away."""
        while True:
            try:
                return work()
            except psycopg.Error as exc:
                if not self._database_away(exc):
                    raise
                if not self._reconnect(exc):
                    return None

    def _database_away(self, exc: psycopg.Error) -> bool:
        # Only a connection that broke or could not be made is an outage: a statement
        # error (a constraint, a timeout, a serialization failure) on a live one is the
        # work's own failure.
        if not isinstance(exc, psycopg.OperationalError):
            return False
        if exc.sqlstate is None or exc.sqlstate in _SERVER_GOING_AWAY:
            # No SQLSTATE: libpq could not connect or lost the socket. Or the server said
            # it is shutting down or not yet accepting: also while a new connection was
            # being set up, when no connection object exists to look at.
            return True
        return any(c is not None and c.closed for c in (self._conn, self._listener))

    def _reconnect(self, exc: psycopg.Error) -> bool:
        """Wait for the database with backoff; True once reconnected (with this worker's
        leases given back), False if a stop was asked meanwhile."""
        self.close()
        self._conn = self._listener = None
        lost_at = time.monotonic()
        log.warning("database unreachable; waiting to reconnect", error=first_line(exc))
        self.metrics.incr("db.reconnects")
        self._set_title("waiting for the database")
        for attempt in itertools.count(1):
            if not self._wait(DATABASE_BACKOFF.delay(attempt)):
                return False
            try:
                released = jobs.release_owned(
                    self.conn, self.owner, reason="the worker's database connection was lost"
                )
            except psycopg.OperationalError as again:
                self.close()
                self._conn = None
                log.debug("database still unreachable", error=first_line(again), attempt=attempt)
                continue
            log.info(
                "database reachable again",
                outage_seconds=round(time.monotonic() - lost_at, 1),
                released=released,
            )
            self._set_title("idle")
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` in heartbeat-sized slices; False as soon as a stop is asked."""
        deadline = time.monotonic() + seconds
        while not self.stop.graceful:
            self.channel.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 1.0))
        return False

    def _runs(self, claimed: list[jobs.Claimed]) -> list[list[jobs.Claimed]]:
        """Fresh small documents travel together; anything else goes alone. A profile
        records one document, so a claim that carries a profile request goes alone."""
        together = [c for c in claimed if groupable(self.settings, c)]
        if len(together) < 2 or self.profile_next is not None:
            return [[c] for c in claimed]
        return [together] + [[c] for c in claimed if c not in together]

    def process(self, claimed: Sequence[jobs.Claimed]) -> None:
        """Drive what was claimed (one document, or fresh small ones together)."""
        ctx = StageContext(
            conn=self.conn,
            settings=self.settings,
            owner=self.owner,
            status=claimed[0].status,
            metrics=self.metrics,
            members=[
                Member({"id": c.id, "correlation_id": c.correlation_id}, c.status) for c in claimed
            ],
            together=len(claimed) > 1,
            channel=self.channel,
            stop=self.stop,
            embedder_factory=self.embedder_factory,
        )
        self.channel.document_id = str(claimed[0].id)
        try:
            if self.profile_next is None:
                drive(ctx, set_title=self._set_title)
                return
            path, self.profile_next = self.profile_next, None
            with memray_recording(path):
                drive(ctx, set_title=self._set_title)
        finally:
            self.finished(len(claimed))

    def finished(self, count: int) -> None:
        """A document (or a group of them) is done with: tell the supervisor, go idle."""
        self.documents_done += count
        self.channel.document_id = None
        self.channel.stage = None
        self.channel.documents_done = self.documents_done
        self.channel.beat(event="finished")
        self._set_title("idle")
