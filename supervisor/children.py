"""What the supervisor knows about each child, and how a death is classified.

One ``Child`` per live process: its slot, pid, lease owner name, when it started,
what its last heartbeat said (document, stage, documents done), its memory
readings, and — once the supervisor decided to end it — why and by when.

``classify`` turns a wait status plus that bookkeeping into a ``Death``: the
reason (the ``worker.restarts.<reason>`` metric segment), whether it was a
failure (backoff, crash-loop accounting), how the dead worker's documents are
released (an ``ErrorClass`` counting an attempt, or ``None``: given back without
one), and whether the supervisor must report it to Sentry because the worker
itself could not.

| how it ended                                     | reason     | failure | documents released |
|--------------------------------------------------|------------|---------|--------------------|
| killed by us: over the hard memory ceiling       | memory     | yes     | memory, attempt++  |
| killed by us: heartbeat went stale               | heartbeat  | yes     | crash, attempt++   |
| killed by us: stage ran past its deadline        | deadline   | yes     | deadline, attempt++|
| killed by us: stage ran past its budget          | budget     | yes     | invalid_input (the |
|   (``shared.budget``: the input is blamed when   |            |         |   one document) or |
|   parsing or chunking one document)              |            |         |   deadline, att.++ |
| exit 78 (configuration error)                    | config     | yes     | no attempt; give up|
| asked to stop (recycle, reload, scale_down,      | that name  | no      | no attempt         |
|   shutdown): exit 0, our signal, or our SIGKILL  |            |         |                    |
|   at the end of its grace                        |            |         |                    |
| exit 0 without being asked                       | exited     | yes     | crash, attempt++   |
| exit 70 (the worker reported its own crash)      | crash      | yes     | crash, attempt++   |
| other exit code, or a signal we did not send     | crash      | yes     | crash, attempt++   |
|   (SIGKILL: the kernel's OOM killer?)            |            |         |                    |

A failure that releases with an attempt while the worker's last heartbeat named a
document is *charged to that document* (``Death.charged_to_document``): the document
pays (an attempt, ``dead`` after ``max_attempts``), not the daemon — it does not count
toward the crash-loop limit. A failure with nothing in hand (start-up, idle) does.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psutil

from ingestd.shared.budget import Blame
from ingestd.shared.channel import ChannelReader
from ingestd.shared.errors import ErrorClass
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_OK
from ingestd.supervisor.memory import MemoryWatch
from ingestd.supervisor.signals import name as signal_name


class Kind(StrEnum):
    WORKER = "worker"
    HTTP = "http"


def log_fields(kind: Kind, slot: int) -> dict[str, object]:
    """How a log line names a child: a worker by its slot; the HTTP child as itself,
    since its bookkeeping slot (0) would read as worker 0's."""
    return {"child": "http"} if kind is Kind.HTTP else {"worker_slot": slot}


class Reason(StrEnum):
    CRASH = "crash"
    EXITED = "exited"
    CONFIG = "config"
    MEMORY = "memory"
    HEARTBEAT = "heartbeat"
    DEADLINE = "deadline"
    BUDGET = "budget"
    RECYCLE = "recycle"
    RELOAD = "reload"
    SCALE_DOWN = "scale_down"
    SHUTDOWN = "shutdown"

    @property
    def planned(self) -> bool:
        """The supervisor asked for this stop: not a failure, nothing to back off from."""
        return self in _PLANNED

    @property
    def replaced(self) -> bool:
        """Whether a new process takes the slot (what ``worker.restarts.<reason>`` counts)."""
        return self not in (Reason.SHUTDOWN, Reason.SCALE_DOWN, Reason.CONFIG)


_PLANNED = frozenset({Reason.RECYCLE, Reason.RELOAD, Reason.SCALE_DOWN, Reason.SHUTDOWN})
# How the documents a dead worker still held are released. None: without counting an
# attempt (the stop was ours, or the configuration is broken — not the document's fault).
# A stale heartbeat has no class of its own: the process stopped working, as in a crash;
# the message says which.
RELEASE_CLASS: dict[Reason, ErrorClass | None] = {
    Reason.CRASH: ErrorClass.CRASH,
    Reason.EXITED: ErrorClass.CRASH,
    Reason.HEARTBEAT: ErrorClass.CRASH,
    Reason.MEMORY: ErrorClass.MEMORY,
    Reason.DEADLINE: ErrorClass.DEADLINE,
    # Unless the budget blamed the input (``Death.release_class``).
    Reason.BUDGET: ErrorClass.DEADLINE,
    Reason.CONFIG: None,
    Reason.RECYCLE: None,
    Reason.RELOAD: None,
    Reason.SCALE_DOWN: None,
    Reason.SHUTDOWN: None,
}


@dataclass
class Child:
    kind: Kind
    slot: int
    pid: int
    owner: str  # the lease owner name: f"{hostname}:{supervisor_pid}:{slot}:{generation}"
    generation: int
    reader: ChannelReader
    started: float  # supervisor's monotonic clock
    started_at: datetime  # wall clock, for the status tables
    settings_version: int  # which configuration (HUP count) it was started with
    process: psutil.Process | None = None
    # What its heartbeats said.
    last_heartbeat: float | None = None
    heartbeats: int = 0
    document_id: str | None = None
    stage: str | None = None
    stage_since: float = 0.0
    documents_done: int = 0
    # The current stage's time budget, as its heartbeats said (``shared.budget``).
    budget: StageLimit | None = None
    stopping_reported: bool = False  # the worker said it is on its way out
    breakers: dict[str, str] = field(default_factory=dict)
    memory: MemoryWatch = field(default_factory=MemoryWatch)
    memory_unreadable: bool = False  # logged once: /proc refused (hardened container?)
    # Recycling thresholds, jittered per process so workers do not recycle together.
    recycle_after_documents: int | None = None
    recycle_at: float | None = None
    # Ending it.
    stop_reason: Reason | None = None  # planned stop requested (a signal was sent)
    stop_signal: int | None = None  # the signal that asked it to stop
    kill_reason: Reason | None = None  # the supervisor decided to kill it
    kill_detail: str = ""
    kill_blame: Blame | None = None  # who a budget overrun is charged to
    kill_at: float | None = None  # SIGKILL if still alive then
    escalated: bool = False  # SIGKILL sent
    channel_open: bool = True

    @classmethod
    def forked(
        cls,
        kind: Kind,
        slot: int,
        pid: int,
        owner: str,
        generation: int,
        read_fd: int,
        now: float,
        settings_version: int,
    ) -> Child:
        """The bookkeeping for a child just forked, ``read_fd`` its end of the channel."""
        child = cls(
            kind=kind,
            slot=slot,
            pid=pid,
            owner=owner,
            generation=generation,
            reader=ChannelReader(read_fd),
            started=now,
            started_at=datetime.now(UTC),
            settings_version=settings_version,
            stage_since=now,
        )
        try:
            child.process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            child.process = None  # already dead: reaped on this loop pass
        return child

    @property
    def label(self) -> str:
        return "http" if self.kind is Kind.HTTP else f"worker {self.slot}"

    @property
    def log_fields(self) -> dict[str, object]:
        return log_fields(self.kind, self.slot)

    def heartbeat_age(self, now: float) -> float:
        return now - (self.last_heartbeat if self.last_heartbeat is not None else self.started)

    def lifetime(self, now: float) -> float:
        return now - self.started

    def on_message(self, msg: dict[str, Any], now: float) -> None:
        """Fold one heartbeat into the bookkeeping."""
        self.last_heartbeat = now
        self.heartbeats += 1
        doc = _str_or_none(msg.get("doc"))
        stage = _str_or_none(msg.get("stage"))
        if (doc, stage) != (self.document_id, self.stage):
            self.stage_since = now
        self.document_id, self.stage = doc, stage
        self.budget = StageLimit.read(msg.get("budget")) if stage is not None else None
        docs = msg.get("docs")
        if isinstance(docs, int) and not isinstance(docs, bool) and docs >= 0:
            self.documents_done = docs
        if msg.get("event") == "stopping":
            self.stopping_reported = True
        breakers = msg.get("breakers")
        if isinstance(breakers, dict):
            self.breakers = {str(k): str(v) for k, v in breakers.items()}

    def stage_age(self, now: float) -> float | None:
        return None if self.stage is None else now - self.stage_since

    def kill_by(self, deadline: float) -> None:
        """SIGKILL at ``deadline``, unless an earlier one is already set."""
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class StageLimit:
    """A stage's budget as a worker's heartbeat states it."""

    seconds: float
    blame: Blame
    basis: str
    done: str | None

    @classmethod
    def read(cls, raw: Any) -> StageLimit | None:
        """None for a missing or malformed field (a torn or foreign message)."""
        if not isinstance(raw, dict):
            return None
        seconds, blame, basis, done = (raw.get(k) for k in ("seconds", "blame", "basis", "done"))
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            return None
        if blame not in Blame.__members__.values() or not isinstance(basis, str):
            return None
        return cls(float(seconds), Blame(blame), basis, done if isinstance(done, str) else None)


@dataclass(frozen=True)
class Death:
    reason: Reason
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    detail: str  # for people: what happened, never document text
    document_id: str | None = None  # what its last heartbeat said it was working on
    blame: Blame | None = None  # a budget overrun's culprit (``shared.budget``)

    @property
    def failure(self) -> bool:
        return not self.reason.planned

    @property
    def charged_to_document(self) -> bool:
        """A failure while holding a document: the document is blamed (an attempt is
        counted when its lease is released), so it is not a crash loop of the daemon.
        Five bomb documents must not stop a supervisor whose workers are healthy."""
        return self.failure and self.release_class is not None and self.document_id is not None

    @property
    def release_class(self) -> ErrorClass | None:
        if self.reason is Reason.BUDGET and self.blame is not None:
            return self.blame.error_class
        return RELEASE_CLASS[self.reason]

    @property
    def report(self) -> bool:
        """Report to Sentry from the supervisor: the worker could not (killed, or died
        without its own error handling running). Exit 70 was reported by the worker;
        a configuration error is the operator's to fix, and ends the supervisor."""
        if self.reason.planned or self.reason is Reason.CONFIG:
            return False
        return self.exit_code != EXIT_CRASH


def describe_status(exit_code: int | None, signum: int | None) -> str:
    if signum is not None:
        return f"killed by {signal_name(signum)}"
    return f"exit code {exit_code}"


def classify(child: Child, wait_status: int) -> Death:
    death = _classify(child, wait_status)
    return dataclasses.replace(death, document_id=child.document_id, blame=child.kill_blame)


def _classify(child: Child, wait_status: int) -> Death:
    code = os.waitstatus_to_exitcode(wait_status)
    exit_code, signum = (code, None) if code >= 0 else (None, -code)
    how = describe_status(exit_code, signum)
    if child.kill_reason is not None:
        return Death(child.kill_reason, exit_code, signum, f"{child.kill_detail}; {how}")
    if exit_code == EXIT_CONFIG:
        return Death(
            Reason.CONFIG,
            exit_code,
            signum,
            f"configuration error (exit code {EXIT_CONFIG}); see its log",
        )
    stopped_as_asked = (
        exit_code == EXIT_OK
        or child.escalated
        or (signum is not None and signum == child.stop_signal)
    )
    if child.stop_reason is not None and stopped_as_asked:
        detail = f"stopped ({child.stop_reason})"
        if child.escalated:
            detail += "; killed by SIGKILL after its grace period"
        return Death(child.stop_reason, exit_code, signum, detail)
    if exit_code == EXIT_OK:
        return Death(Reason.EXITED, exit_code, signum, "exited with code 0 without being asked")
    if exit_code == EXIT_CRASH:
        return Death(
            Reason.CRASH, exit_code, signum, f"crashed (exit code {EXIT_CRASH}); see its log"
        )
    if signum == signal.SIGKILL:
        how += " (not sent by the supervisor: the kernel's OOM killer, or an operator)"
    elif signum is not None:
        how += " (not sent by the supervisor)"
    return Death(Reason.CRASH, exit_code, signum, f"died: {how}")
