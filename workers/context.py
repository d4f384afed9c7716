"""What a stage is given: the documents it works on (one, or a group of small ones
claimed together), their connection, and the worker's duties towards them.

A single document is a group of one. Whatever the number, the same three duties are
kept here, once: ``checkpoint()`` (heartbeat, lease renewal, stop requests),
``advance()`` (the status change that ends a stage, going on into the next one under
the kept lease when it can) and ``end_attempt()`` (an error, classified and recorded
on the one document it belongs to).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.budget import BUDGETED, Size, StageBudget, blame, size_of
from ingestd.shared.channel import WorkerChannel
from ingestd.shared.db import documents, jobs
from ingestd.shared.db.chunks import ChunkRow
from ingestd.shared.embedders.base import Embedder
from ingestd.shared.errors import LeaseLost
from ingestd.shared.parsers.progress import Consumed
from ingestd.shared.settings import Settings
from ingestd.shared.states import ACTIVE_OF, Status, is_handover
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.attempts import end_attempt

log = get_logger("ingestd.worker")


class StopRequested(Exception):
    """Raised at a checkpoint when the worker was asked to stop (TERM or recycle)."""


@dataclass
class StopFlag:
    graceful: bool = False  # stop at the next checkpoint
    reason: str = ""

    def request(self, reason: str) -> None:
        self.graceful = True
        self.reason = self.reason or reason


@dataclass
class Member:
    """One document of a run: its row (kept up to date with what each stage records)
    and what a group's stages hand each other in memory."""

    doc: dict[str, Any]
    status: Status
    blocks: list[str] = field(default_factory=list)
    chunks: list[ChunkRow] = field(default_factory=list)
    # What the current stage records on the document and in its event.
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    embedded: int = 0

    @property
    def id(self) -> UUID:
        return self.doc["id"]  # type: ignore[no-any-return]

    @property
    def correlation_id(self) -> UUID:
        return self.doc["correlation_id"]  # type: ignore[no-any-return]


class StageContext:
    """The documents of one run and the worker's duties towards them.

    ``together``: small documents claimed together, held in memory from stage to
    stage (workers/stages/*: the ``together`` bodies). Otherwise the run has one
    document, and the stages stream it so its size does not matter.
    """

    def __init__(
        self,
        *,
        conn: psycopg.Connection[Any],
        settings: Settings,
        owner: str,
        status: Status,
        metrics: Metrics,
        doc: dict[str, Any] | None = None,
        members: Sequence[Member] = (),
        together: bool = False,
        channel: WorkerChannel | None = None,
        stop: StopFlag | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.owner = owner
        self.status = status  # the stage being run
        self.metrics = metrics
        # ``doc``: a run of one built from its row (stage tests, profiling sessions).
        self.members = list(members) + ([Member(doc, status)] if doc is not None else [])
        self.together = together
        self.channel = channel or WorkerChannel(None)
        self.stop = stop or StopFlag()
        self.embedder_factory = embedder_factory
        self.id = uuid.uuid4()  # a group's correlation id (its API requests send it)
        # Members whose lease this run gave up with their last status change.
        self.left: list[Member] = []
        self._lease_renewed = time.monotonic()
        self.budget: StageBudget | None = None  # the current stage's (shared.budget)

    def alone(self, member: Member) -> StageContext:
        """A run of ``member`` by itself, streamed, under the same worker."""
        return StageContext(
            conn=self.conn,
            settings=self.settings,
            owner=self.owner,
            status=member.status,
            metrics=self.metrics,
            members=[member],
            channel=self.channel,
            stop=self.stop,
            embedder_factory=self.embedder_factory,
        )

    # -- the one document of a streamed run ------------------------------------------

    @property
    def doc(self) -> dict[str, Any]:
        (member,) = self.members
        return member.doc

    @property
    def doc_id(self) -> UUID:
        return self.doc["id"]  # type: ignore[no-any-return]

    @property
    def correlation_id(self) -> UUID:
        """What the run's log lines and API requests carry: a group's own id, or the
        document's."""
        return self.id if self.together else self.members[0].correlation_id

    @property
    def ids(self) -> list[UUID]:
        return [m.id for m in self.members]

    def embedder(self) -> Embedder:
        if self.embedder_factory is None:
            raise RuntimeError("this worker was given no embedder")
        return self.embedder_factory()

    # -- the duties --------------------------------------------------------------------

    def start_budget(self) -> None:
        """The current stage's time budget for the run's input, told to the supervisor
        with the next heartbeat (none for a stage without one)."""
        if self.status not in BUDGETED or not self.members:
            self._set_budget(None)
            return
        size = sum((size_of(self.status, m.doc) for m in self.members), Size())
        local = self.settings.parser == "local"
        blame_it = blame(self.status, alone=not self.together, local_parser=local)
        self._set_budget(StageBudget(self.status, size, self.settings, blame_it))

    @contextmanager
    def budget_of(self, member: Member) -> Iterator[None]:
        """A group member's own budget while its stage work runs, the heartbeat naming
        it, so that an overrun is charged to that member alone."""
        run_budget, run_doc = self.budget, self.channel.document_id
        self.channel.document_id = str(member.id)
        blame_it = blame(self.status, alone=True, local_parser=self.settings.parser == "local")
        self._set_budget(
            StageBudget(self.status, size_of(self.status, member.doc), self.settings, blame_it)
        )
        self.channel.beat()  # the supervisor's clock for it starts now, under its name
        try:
            yield
        finally:
            self.channel.document_id = run_doc
            self._set_budget(run_budget)

    def progress(self, consumed: Consumed) -> None:
        """A parser read more of its input (text or not): a heartbeat, the budget kept
        (how far it got goes into the message if it runs out), the leases renewed. A
        group's members are parsed in one go, so only a run of one stops here."""
        if self.budget is not None:
            self.budget.consumed(consumed)
            self.channel.budget = self.budget.wire()
        self.checkpoint(stoppable=not self.together)

    def _set_budget(self, budget: StageBudget | None) -> None:
        self.budget = budget
        self.channel.budget = budget.wire() if budget is not None else None

    def checkpoint(self, *, stoppable: bool = True) -> None:
        """Between blocks and batches: tell the supervisor we live, keep the leases,
        keep to the stage's budget, and honour a stop request at this safe point."""
        self.channel.beat()
        if self.budget is not None:
            self.budget.check()
        now = time.monotonic()
        # Renew at a third of the lease so two missed renewals still leave margin.
        if now - self._lease_renewed > self.settings.lease_seconds / 3:
            kept = jobs.extend_leases(
                self.conn, self.ids, self.owner, lease_seconds=self.settings.lease_seconds
            )
            self._keep(self.ids, kept)
            self._lease_renewed = now
        if stoppable and self.stop.graceful:
            raise StopRequested(self.stop.reason)

    def advance(
        self,
        to: Status,
        changes: Mapping[UUID, Mapping[str, Any]],
        details: Mapping[UUID, Mapping[str, Any]] | None = None,
    ) -> None:
        """End the stage for the members in ``changes``: call inside the transaction
        that wrote their results.

        When ``to`` is a resting status this worker can go on from (``HANDOVER``), the
        next stage starts in the same statement, keeping the lease: no other worker can
        take a document between two stages, and no claim round trip is spent. Members
        that rest (or end) leave the run with their lease.
        """
        then = ACTIVE_OF.get(to)
        go_on = then is not None and is_handover(self.status, then) and not self.stop.graceful
        moved, status = jobs.finish_stage(
            self.conn,
            self.owner,
            from_status=self.status,
            to_status=to,
            changes=changes,
            details=details,
            go_on=go_on,
            lease_seconds=self.settings.lease_seconds,
        )
        for m in self.members:
            if m.id in moved:
                m.status = status
                m.doc.update(changes[m.id])
                m.doc["status"] = status
        if not go_on:
            self.left += [m for m in self.members if m.id in moved]
            self.members = [m for m in self.members if m.id not in moved]
        self._keep(list(changes), moved)
        if go_on:
            self._lease_renewed = time.monotonic()

    def advance_recorded(self, to: Status) -> None:
        """``advance`` every member with what its stage recorded (``fields``, ``details``)."""
        self.advance(
            to, {m.id: m.fields for m in self.members}, {m.id: m.details for m in self.members}
        )

    def transition(
        self,
        to: Status,
        *,
        fields: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """``advance`` for the one document of a streamed run."""
        doc_id = self.doc_id
        self.advance(to, {doc_id: fields or {}}, {doc_id: details} if details else None)

    def refresh(self) -> None:
        """Read the members' rows afresh; one no longer ours is let go."""
        rows = documents.leased(self.conn, self.ids, self.owner, self.status)
        for m in self.members:
            if m.id in rows:
                m.doc = rows[m.id]
        self._keep(self.ids, set(rows))

    def end_attempt(self, member: Member, exc: BaseException) -> None:
        """``member``'s attempt failed: record it (retry, fail or dead); it leaves the run."""
        self.members = [m for m in self.members if m is not member]
        with context.bind_document(member.id, member.correlation_id):
            end_attempt(
                self.conn,
                member.id,
                self.owner,
                status=self.status,
                exc=exc,
                settings=self.settings,
                metrics=self.metrics,
            )

    def per_member(self, work: Callable[[Member], None]) -> None:
        """A group's stage work for each member: one that raises ends its own attempt
        and leaves the run; the others go on."""
        for m in list(self.members):
            try:
                work(m)
            except Exception as exc:
                self.end_attempt(m, exc)

    def _keep(self, asked: Sequence[UUID], kept: set[UUID]) -> None:
        """Let go of the members among ``asked`` that are no longer ours; with none
        left, the run is over."""
        wanted = set(asked)
        lost = [m for m in self.members if m.id in wanted and m.id not in kept]
        if not lost:
            return
        self.metrics.incr("leases.lost", len(lost))
        log.warning("lease lost; letting documents go", documents=[str(m.id) for m in lost])
        self.members = [m for m in self.members if m not in lost]
        if not self.members:
            raise LeaseLost(f"{len(lost)} document(s) changed hands under {self.owner}")
