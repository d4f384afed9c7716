"""How an attempt ends when it fails: the error classified, recorded on its document
(retry, fail or dead), counted, logged and reported. The one place for it, whether the
document ran alone or in a group."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.db import jobs
from ingestd.shared.errors import ErrorClass, IngestError, LeaseLost, unexpected
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import sentry
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics

log = get_logger("ingestd.worker")


def classify(exc: BaseException) -> IngestError:
    """The error as the state machine knows it; anything unclassified is a bug (internal,
    retried), logged with its traceback here."""
    if isinstance(exc, IngestError):
        return exc
    log.error("stage crashed", error_class="internal", exc_info=exc)
    return unexpected(exc)


def end_attempt(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    owner: str,
    *,
    status: Status,
    exc: BaseException,
    settings: Settings,
    metrics: Metrics,
) -> Status:
    """Record how the document's attempt failed; return the status it is in now."""
    err = classify(exc)
    stage = str(status)
    try:
        outcome = jobs.end_attempt(
            conn,
            doc_id,
            owner=owner,
            active_status=status,
            error=err,
            max_attempts=settings.max_attempts,
            retry_base=settings.retry_base_seconds,
            retry_cap=settings.retry_max_seconds,
            horizon=settings.service_wait_horizon_seconds,
        )
    except LeaseLost as lost:
        log.warning("lease lost while recording an error", detail=str(lost))
        return status
    cls = str(err.error_class)
    if outcome.status is Status.FAILED:
        metrics.incr(f"documents.failed.{stage}.{cls}")
        sentry.capture_document_error(exc, stage=stage, error_class=err.error_class)
        # Bad input is the sender's problem: a warning, not an error of the service.
        bad_input = err.error_class is ErrorClass.INVALID_INPUT
        (log.warning if bad_input else log.error)(
            "document failed", error_class=cls, message=err.message
        )
    elif outcome.status is Status.DEAD:
        metrics.incr(f"documents.dead.{cls}")
        sentry.capture_document_error(exc, stage=stage, error_class=err.error_class)
        log.error(
            "document dead: waited past the service horizon"
            if outcome.waited_out
            else "document dead: attempts exhausted",
            error_class=cls,
            message=err.message,
            attempts=outcome.attempts,
        )
    else:
        metrics.incr(f"documents.retried.{stage}.{cls}")
        log.warning(
            "attempt failed; retry scheduled",
            error_class=cls,
            message=err.message,
            attempts=outcome.attempts,
            retry_at=outcome.run_after.isoformat() if outcome.run_after else None,
        )
    return outcome.status
