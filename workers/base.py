"""The worker: claim → run the stage for the document's status → transition → next.

Shared-nothing: parallelism comes from processes, and within the embed stage
from requests in flight. A claim may take several small documents; fresh ones
run through the stages together as a group (workers/group.py), anything else
one document at a time through the stage modules. Every way an
attempt can end is handled here, in one place: success, a classified error
(retry, fail or dead), a lost lease, a stop request, or a bug.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.db import jobs
from ingestd.shared.db.connect import connect
from ingestd.shared.errors import IngestError, LeaseLost, unexpected
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import context, sentry
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.context import StageContext, StopFlag, StopRequested
from ingestd.workers.group import groupable, run_group
from ingestd.workers.maintenance import IndexMaintainer, maybe_build_index
from ingestd.workers.stages import STAGES

log = get_logger("ingestd.worker")


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
        embedder_factory: Callable[[], Any] | None = None,
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
            # Intermediate stage commits are asynchronous: every one of them is
            # redone idempotently if a server crash loses it (the stage's data and
            # its status change commit together, so they are lost together). The
            # commit that makes a document ``complete`` is synchronous (finalize.py).
            self._conn.execute("SET synchronous_commit = off")
        return self._conn

    def _wait_for_work(self, timeout: float) -> None:
        """Sleep until a NOTIFY says work arrived, or ``timeout`` passes (lost notifications)."""
        if self._listener is None or self._listener.closed:
            self._listener = connect(
                self.url, autocommit=True, application_name=f"ingestd-listen-{self.slot}"
            )
            self._listener.execute("LISTEN ingestd_work")
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
        """Work until asked to stop (or, with ``until_idle``, until nothing is runnable)."""
        self.prepare()
        self._set_title("idle")
        next_reap = 0.0
        while not self.stop.graceful:
            self.channel.beat()
            now = time.monotonic()
            reap = now >= next_reap
            if reap:
                # Expired leases are looked for on a timer, not on every claim.
                next_reap = now + max(self.settings.lease_seconds / 4, 0.05)
            claimed = jobs.claim(
                self.conn,
                self.owner,
                limit=self.settings.claim_batch,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
                reap=reap,
                max_bytes=self.settings.claim_max_bytes,
            )
            if not claimed:
                if until_idle:
                    maybe_build_index(self.url, min_rows=self.settings.index_min_rows)
                    break
                self.maintainer.poke(now)
                # Wake at least every second to heartbeat while idle.
                self._wait_for_work(min(self.settings.poll_seconds, 1.0))
                continue
            together = [c for c in claimed if groupable(self.settings, c)]
            if len(together) > 1 and self.profile_next is None:
                run_group(self, together)
                claimed = [c for c in claimed if c not in together]
            for i, c in enumerate(claimed):
                if self.stop.graceful:
                    for rest in claimed[i:]:
                        jobs.release(self.conn, rest.id, self.owner, reason=self.stop.reason)
                    break
                self.process(c)
        self._set_title("stopping")
        self.channel.beat(event="stopping")
        return 0

    def process(self, claimed: jobs.Claimed) -> Status:
        with context.bind_document(claimed.id, claimed.correlation_id):
            if self.profile_next is not None:
                return self._process_profiled(claimed)
            return self._process(claimed)

    def _process_profiled(self, claimed: jobs.Claimed) -> Status:
        import memray

        path, self.profile_next = self.profile_next, None
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("memray recording started", path=str(path))
        with memray.Tracker(path, native_traces=False):
            status = self._process(claimed)
        log.info("memray recording finished", path=str(path))
        return status

    def _process(self, claimed: jobs.Claimed) -> Status:
        status = claimed.status
        self.channel.document_id = str(claimed.id)
        try:
            while status in STAGES:
                doc = self.conn.execute(
                    "SELECT * FROM documents WHERE id = %s", (claimed.id,)
                ).fetchone()
                if doc is None or doc["lease_owner"] != self.owner:
                    raise LeaseLost(f"document {claimed.id} vanished or changed hands")
                ctx = StageContext(
                    conn=self.conn,
                    settings=self.settings,
                    owner=self.owner,
                    doc=doc,
                    status=status,
                    metrics=self.metrics,
                    channel=self.channel,
                    stop=self.stop,
                    embedder_factory=self.embedder_factory,
                )
                status = self._run_stage(ctx)
            if status is Status.COMPLETE:
                self.metrics.incr("documents.completed")
            return status
        finally:
            self.finished(1)

    def finished(self, documents: int) -> None:
        """A document (or a group of them) is done with: tell the supervisor, go idle."""
        self.documents_done += documents
        self.channel.document_id = None
        self.channel.stage = None
        self.channel.documents_done = self.documents_done
        self.channel.beat(event="finished")
        self._set_title("idle")

    def _run_stage(self, ctx: StageContext) -> Status:
        stage = str(ctx.status)
        self.channel.stage = stage
        self.channel.beat(event="stage")
        self._set_title(f"doc={str(ctx.doc_id)[:8]} stage={stage}")
        started = time.perf_counter()
        with context.bind_stage(stage):
            try:
                STAGES[ctx.status](ctx)
            except StopRequested as stop:
                released = jobs.release(self.conn, ctx.doc_id, self.owner, reason=str(stop))
                log.info("stopped at checkpoint", reason=str(stop), released=released)
                return Status(ctx.status)
            except LeaseLost as lost:
                log.warning("lease lost; abandoning document", detail=str(lost))
                self.metrics.incr("leases.lost")
                return ctx.status
            except IngestError as err:
                return self.end_attempt(ctx.doc_id, ctx.status, err, err)
            except Exception as exc:  # a bug: classified, recorded, reported, retried
                log.exception("stage crashed", error_class="internal")
                return self.end_attempt(ctx.doc_id, ctx.status, unexpected(exc), exc)
            elapsed = time.perf_counter() - started
            self.metrics.timing(f"stage.{stage}.duration", elapsed * 1000)
            log.info("stage finished", to_status=str(ctx.status), seconds=round(elapsed, 3))
        return ctx.status

    def end_attempt(
        self, doc_id: UUID, status: Status, err: IngestError, exc: BaseException
    ) -> Status:
        """Record how an attempt failed: retry, fail or dead; counted, logged, reported."""
        stage = str(status)
        try:
            outcome = jobs.end_attempt(
                self.conn,
                doc_id,
                owner=self.owner,
                active_status=status,
                error=err,
                max_attempts=self.settings.max_attempts,
                retry_base=self.settings.retry_base_seconds,
                retry_cap=self.settings.retry_max_seconds,
            )
        except LeaseLost as lost:
            log.warning("lease lost while recording an error", detail=str(lost))
            return status
        cls = str(err.error_class)
        if outcome.status is Status.FAILED:
            self.metrics.incr(f"documents.failed.{stage}.{cls}")
            sentry.capture_document_error(exc, stage=stage, error_class=err.error_class)
            log.error("document failed", error_class=cls, message=err.message)
        elif outcome.status is Status.DEAD:
            self.metrics.incr(f"documents.dead.{cls}")
            sentry.capture_document_error(exc, stage=stage, error_class=err.error_class)
            log.error(
                "document dead: attempts exhausted",
                error_class=cls,
                message=err.message,
                attempts=outcome.attempts,
            )
        else:
            self.metrics.incr(f"documents.retried.{stage}.{cls}")
            log.warning(
                "attempt failed; retry scheduled",
                error_class=cls,
                message=err.message,
                attempts=outcome.attempts,
                retry_at=outcome.run_after.isoformat() if outcome.run_after else None,
            )
        return outcome.status
