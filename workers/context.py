"""What a stage is given: the document, its connection, and the worker's duties
(heartbeat, lease renewal, stop requests) bundled into one ``checkpoint()``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.db import jobs
from ingestd.shared.errors import LeaseLost
from ingestd.shared.settings import Settings
from ingestd.shared.states import ACTIVE_OF, Status
from ingestd.shared.telemetry.metrics import Metrics


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
class StageContext:
    conn: psycopg.Connection[Any]
    settings: Settings
    owner: str
    doc: dict[str, Any]
    status: Status
    metrics: Metrics
    channel: WorkerChannel = field(default_factory=lambda: WorkerChannel(None))
    stop: StopFlag = field(default_factory=StopFlag)
    embedder_factory: Callable[[], Any] | None = None
    _lease_renewed: float = field(default_factory=time.monotonic)

    @property
    def doc_id(self) -> UUID:
        return self.doc["id"]  # type: ignore[no-any-return]

    def checkpoint(self, *, stoppable: bool = True) -> None:
        """Between blocks and batches: tell the supervisor we live, keep the lease,
        and honour a stop request at this safe point."""
        self.channel.beat()
        now = time.monotonic()
        # Renew at a third of the lease so two missed renewals still leave margin.
        if now - self._lease_renewed > self.settings.lease_seconds / 3:
            jobs.extend_lease(
                self.conn, self.doc_id, self.owner, lease_seconds=self.settings.lease_seconds
            )
            self._lease_renewed = now
        if stoppable and self.stop.graceful:
            raise StopRequested(self.stop.reason)

    def transition(
        self,
        to: Status,
        *,
        fields: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Move the document on. Call inside the transaction that wrote the results.

        When ``to`` is a resting status this worker can go on from, the next stage
        is started in the same transaction, keeping the lease: no other worker can
        take the document between two stages, and no claim round trip is spent.
        """
        go_on = to in ACTIVE_OF and to is not Status.AWAITING_PARSE and not self.stop.graceful
        moved, status = jobs.finish_stage(
            self.conn,
            self.owner,
            from_status=self.status,
            to_status=to,
            changes={self.doc_id: fields or {}},
            details={self.doc_id: details} if details else None,
            go_on=go_on,
            lease_seconds=self.settings.lease_seconds,
        )
        if self.doc_id not in moved:
            raise LeaseLost(
                f"document {self.doc_id} is not {self.status} under {self.owner}'s lease"
            )
        self.status = status
        if go_on:
            self._lease_renewed = time.monotonic()
