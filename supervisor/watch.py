"""The supervisor's judgements about one live child, as plain functions of its
bookkeeping and the clock: is its heartbeat stale, has its stage run past the
deadline, is it due for recycling, how much memory does it hold. The arbiter acts on
the answers (signals, grace, logs); the answers say why, in words for the log.
"""

from __future__ import annotations

import random

import psutil

from ingestd.shared.budget import KILL_SLACK_SECONDS, overrun_message
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.logs import get_logger
from ingestd.supervisor.children import Child, Kind
from ingestd.supervisor.memory import read_uss

_log = get_logger("ingestd.supervisor")


def unclaimed(child: Child) -> bool:
    """Nobody decided its end yet: no planned stop asked, no kill under way."""
    return child.stop_reason is None and child.kill_reason is None


def stale_heartbeat(child: Child, now: float, settings: Settings) -> str | None:
    # The HTTP child is held to heartbeats once it has shown it sends them.
    if child.kind is Kind.HTTP and child.heartbeats == 0:
        return None
    age = child.heartbeat_age(now)
    if age <= settings.heartbeat_timeout_seconds:
        return None
    return f"no heartbeat for {age:.1f}s (timeout {settings.heartbeat_timeout_seconds}s)"


def past_stage_deadline(child: Child, now: float, settings: Settings) -> str | None:
    if child.kind is not Kind.WORKER:
        return None
    age = child.stage_age(now)
    if age is None or age <= settings.stage_deadline_seconds:
        return None
    return (
        f"stage {child.stage} of document {child.document_id} ran "
        f"{age:.1f}s (deadline {settings.stage_deadline_seconds}s)"
    )


def past_budget(child: Child, now: float, settings: Settings) -> str | None:
    """Past the budget its heartbeat stated for this stage (``shared.budget``), by more
    than the slack that lets the worker stop itself first; a budget at or above the
    stage deadline is left to the deadline."""
    limit = child.budget
    age = child.stage_age(now)
    if child.kind is not Kind.WORKER or limit is None or age is None or child.stage is None:
        return None
    if limit.seconds >= settings.stage_deadline_seconds:
        return None
    if age <= limit.seconds + KILL_SLACK_SECONDS:
        return None
    return overrun_message(child.stage, limit.seconds, limit.basis, limit.done)


def recycle_due(child: Child, now: float) -> str | None:
    if child.recycle_after_documents is not None and (
        child.documents_done >= child.recycle_after_documents
    ):
        return f"{child.documents_done} documents done"
    if child.recycle_at is not None and now >= child.recycle_at:
        return f"{child.lifetime(now):.0f}s old"
    return None


def set_recycle_limits(child: Child, s: Settings, rng: random.Random, now: float) -> None:
    """Jittered per worker, so workers started together do not recycle together."""
    if s.recycle_after_documents is not None:
        extra = round(s.recycle_after_documents * rng.uniform(0, s.recycle_jitter))
        child.recycle_after_documents = s.recycle_after_documents + extra
    if s.recycle_after_seconds is not None:
        child.recycle_at = now + s.recycle_after_seconds * (1 + rng.uniform(0, s.recycle_jitter))


def read_memory(child: Child) -> int | None:
    """The worker's USS now, or None: it is exiting (reaped on a coming pass), or /proc
    refuses (a hardened container?), which is logged once per worker."""
    if child.process is None:
        return None
    try:
        return read_uss(child.process)
    except psutil.NoSuchProcess:
        return None
    except psutil.Error as exc:
        if not child.memory_unreadable:
            child.memory_unreadable = True
            _log.error(
                "cannot read the worker's memory: no ceiling enforced",
                **child.log_fields,
                worker_pid=child.pid,
                error=repr(exc),
            )
        return None
