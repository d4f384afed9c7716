"""What a child's death means outside the supervisor's loop: for its documents, for
the logs, the metrics and Sentry.

The arbiter reaps a child, ``children.classify`` says how it died, and ``Deaths.record``
does the rest at once:

- a dead worker's documents are released, with the reason. A death that is the
  document's fault (crash, memory, deadline, budget, stale heartbeat) counts an attempt
  (``jobs.release_worker_leases``: retry later, or dead after ``max_attempts``); a stop
  that was ours, or a configuration error, gives them back without one. A budget
  overrun blamed on the input (``shared.budget``) fails the one document the heartbeat
  named (``invalid_input``, no retry) and gives the others of its group back without
  an attempt. While the
  database is unreachable the release waits in a queue and is retried on every
  publishing pass; what is still queued when the supervisor exits is left to the
  leases' expiry, and said so.
- every death is logged (an error unless the supervisor asked for it), a replaced
  child counts in ``worker.restarts.<reason>``, and a death the child could not
  report itself goes to Sentry with the document's correlation id.

What the death means for the loop (respawn, back off, give up) stays in the arbiter.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.budget import Blame
from ingestd.shared.db import jobs, reports
from ingestd.shared.errors import ErrorClass
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import sentry
from ingestd.shared.telemetry.context import STAGES
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.children import Child, Death, Kind, Reason
from ingestd.supervisor.database import SupervisorDatabase
from ingestd.supervisor.memory import megabytes
from ingestd.supervisor.signals import name as signal_name

RETRYING = "releasing a dead worker's documents (will retry)"


@dataclass(frozen=True)
class PendingRelease:
    """A dead worker's documents we could not release yet (database unreachable)."""

    owner: str
    label: str
    release_class: ErrorClass | None
    message: str
    culprit: UUID | None = None  # charged alone; the others are given back uncharged
    document: str | None = None  # what its last heartbeat named
    stage: str | None = None


class Deaths:
    def __init__(self, db: SupervisorDatabase, settings: Settings, metrics: Metrics) -> None:
        self._db = db
        # Both replaced by the arbiter on reload.
        self.settings = settings
        self.metrics = metrics
        self.restarts: Counter[str] = Counter()
        self._pending: list[PendingRelease] = []
        self._log = get_logger("ingestd.supervisor")

    @property
    def pending(self) -> int:
        """How many dead workers' documents wait for the database to come back."""
        return len(self._pending)

    def record(self, child: Child, death: Death, lifetime: float) -> None:
        if child.kind is Kind.WORKER:
            self._release_documents(child, death)
        if death.reason.replaced:
            segment = str(death.reason) if child.kind is Kind.WORKER else "http"
            self.restarts[segment] += 1
            self.metrics.incr(f"worker.restarts.{segment}")
        if death.report:
            self._report(child, death)
        log = self._log.info if death.reason.planned else self._log.error
        log(
            "worker exited" if child.kind is Kind.WORKER else "http child exited",
            **child.log_fields,
            worker_pid=child.pid,
            reason=str(death.reason),
            exit_code=death.exit_code,
            detail=death.detail,
            signal=signal_name(death.signal) if death.signal else None,
            lifetime_seconds=round(lifetime, 3),
            document_id=child.document_id,
            stage=child.stage,
            documents_done=child.documents_done,
            uss_mb=megabytes(child.memory.last_uss),
        )

    def abandoned(self, child: Child) -> None:
        """The supervisor itself failed and stopped ``child``: give its documents back
        (without an attempt: not their fault) when ``finish`` runs."""
        if child.kind is Kind.WORKER:
            self._pending.append(
                PendingRelease(
                    child.owner,
                    f"{child.label} (pid {child.pid})",
                    None,
                    f"{child.label} (pid {child.pid}) stopped: the supervisor failed",
                )
            )

    def retry(self) -> None:
        """Release what waited for the database, oldest first, until it fails again."""
        while self._pending:
            try:
                self._release(self._pending[0])
            except psycopg.Error as exc:
                self._db.error(RETRYING, exc)
                return
            self._pending.pop(0)

    def finish(self) -> None:
        """The supervisor is exiting: a last try, then say what is left to the leases."""
        self.retry()
        if self._pending:
            self._log.error(
                "could not release the documents of dead workers; their leases expire "
                "by themselves",
                owners=[p.owner for p in self._pending],
                lease_seconds=self.settings.lease_seconds,
            )

    def _release_documents(self, child: Child, death: Death) -> None:
        pending = PendingRelease(
            child.owner,
            f"{child.label} (pid {child.pid})",
            death.release_class,
            f"{child.label} (pid {child.pid}) {death.detail}",
            _culprit(death),
            death.document_id,
            child.stage,
        )
        try:
            self._release(pending)
        except psycopg.Error as exc:
            self._pending.append(pending)
            self._db.error(RETRYING, exc)

    def _release(self, pending: PendingRelease) -> None:
        conn = self._db.conn()
        if pending.release_class is not None:
            self._charge(conn, pending, pending.release_class)
        if pending.release_class is None or pending.culprit is not None:
            for doc_id in reports.leased_by(conn, pending.owner):
                if jobs.release(conn, doc_id, pending.owner, reason=pending.message):
                    self._log.info(
                        "document released",
                        document_id=str(doc_id),
                        worker=pending.label,
                        attempt_counted=False,
                    )

    def _charge(
        self, conn: psycopg.Connection[Any], pending: PendingRelease, error_class: ErrorClass
    ) -> None:
        s = self.settings
        released = jobs.release_worker_leases(
            conn,
            pending.owner,
            error_class=error_class,
            message=pending.message,
            max_attempts=s.max_attempts,
            retry_base=s.retry_base_seconds,
            retry_cap=s.retry_max_seconds,
            only=pending.culprit,
        )
        if not released and pending.document is not None:
            # It died working on a document it no longer held (it let it go first, or
            # the document changed hands): nothing to charge, which is said, not passed.
            self._log.warning(
                "dead worker held no document to charge",
                worker=pending.label,
                document_id=pending.document,
                error_class=str(error_class),
                detail=pending.message,
            )
        for doc_id, outcome in released:
            self._log.warning(
                "document released",
                document_id=str(doc_id),
                worker=pending.label,
                error_class=str(error_class),
                to_status=str(outcome.status),
                attempts=outcome.attempts,
                attempt_counted=True,
            )
            if outcome.status is Status.DEAD:
                self.metrics.incr(f"documents.dead.{error_class}")
            elif outcome.status is Status.FAILED:
                self.metrics.incr(f"documents.failed.{pending.stage}.{error_class}")

    def _report(self, child: Child, death: Death) -> None:
        correlation_id = None
        if child.document_id is not None:
            try:
                doc = reports.document(self._db.conn(), uuid.UUID(child.document_id))
                correlation_id = doc["correlation_id"] if doc else None
            except (psycopg.Error, ValueError) as exc:
                self._log.warning(
                    "could not look up the document's correlation id",
                    document_id=child.document_id,
                    error=str(exc),
                )
                self._db.close()
        reason = str(death.reason) if child.kind is Kind.WORKER else f"http {death.reason}"
        sentry.capture_worker_death(
            child.slot if child.kind is Kind.WORKER else None,
            child.pid,
            reason,
            child.document_id,
            correlation_id,
            stage=child.stage if child.stage in STAGES else None,
        )


def _culprit(death: Death) -> UUID | None:
    """The one document a death is charged to alone: the one named by the heartbeat of
    a worker stopped for a budget overrun blamed on its input."""
    if death.reason is not Reason.BUDGET or death.blame is not Blame.INPUT:
        return None
    try:
        return uuid.UUID(death.document_id) if death.document_id else None
    except ValueError:
        return None
