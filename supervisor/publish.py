"""The supervisor's view, published: the ``supervisor_status`` and ``worker_status``
rows (what ``ingestd status`` and ``/v1/status`` read), queue gauges, and systemd's
STATUS line, readiness and watchdog.

Rows go out every ``PUBLISH_SECONDS``; the queue statistics, which scan ``documents``,
every ``QUEUE_STATS_SECONDS``. A database or sd_notify failure is logged (throttled) and
the loop goes on: publishing never stops supervision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingestd.shared.db import reports, supervisors
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor import control
from ingestd.supervisor.children import Child, Kind
from ingestd.supervisor.database import ERROR_LOG_SECONDS, SupervisorDatabase
from ingestd.supervisor.sdnotify import SdNotifyError, SystemdNotifier

PUBLISH_SECONDS = 1.0
# queue_summary and counts_by_status scan ``documents``: not every second.
QUEUE_STATS_SECONDS = 10.0
WATCHDOG_SECONDS = 1.0

_BREAKER_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class View:
    """What the arbiter knows, as published."""

    supervisor: str
    pid: int
    host: str
    started_at: datetime
    state: str
    target: int
    drain: bool
    reloading: bool
    settings_version: int
    children: Sequence[Child]
    restarts: Mapping[str, int]
    pending_releases: int
    config_path: str | None

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.children if c.kind is Kind.WORKER]


class Publisher:
    def __init__(self, db: SupervisorDatabase, metrics: Metrics) -> None:
        self._db = db
        self.metrics = metrics  # replaced by the arbiter on reload
        self.notifier = SystemdNotifier(None)
        self.status_line = ""
        self._queue: dict[str, Any] = {}
        self._docs_per_second: float | None = None
        self._next_publish = 0.0
        self._next_queue_stats = 0.0
        self._next_watchdog = 0.0
        self._notify_error_logged_at = -ERROR_LOG_SECONDS
        self._log = get_logger("ingestd.supervisor")

    def next_due(self) -> float:
        return min(self._next_publish, self._next_watchdog)

    def due(self, now: float) -> bool:
        return now >= self._next_publish

    def publish(self, now: float, view: View) -> None:
        self._next_publish = now + PUBLISH_SECONDS
        if now >= self._next_queue_stats:
            self._next_queue_stats = now + QUEUE_STATS_SECONDS
            try:
                self._refresh_queue_stats(self._db.conn())
            except psycopg.Error as exc:
                self._db.error("reading queue statistics", exc)
        workers = view.workers
        try:
            supervisors.publish(
                self._db.conn(),
                supervisor=view.supervisor,
                pid=view.pid,
                host=view.host,
                started_at=view.started_at,
                state=view.state,
                details=self._details(view),
                workers=[worker_row(c, now) for c in workers],
            )
        except psycopg.Error as exc:
            self._db.error("publishing status", exc)
        self.metrics.gauge("workers.alive", len(workers))
        line = self.status_line
        self.refresh_status_line(view)
        if self.status_line != line:
            self.notify(lambda: self.notifier.status(self.status_line))

    def withdraw(self, supervisor: str) -> None:
        """This supervisor is exiting: remove its rows."""
        try:
            supervisors.withdraw(self._db.conn(), supervisor)
        except psycopg.Error as exc:
            self._db.error("removing this supervisor's status rows", exc)

    def forget_dead_supervisors(self, host: str) -> None:
        """Remove the rows of supervisors on this host that are no longer running (on a
        connection of its own: nothing of the supervisor's is open before the first fork)."""
        try:
            with self._db.connect() as conn:
                gone = control.forget_dead_supervisors(conn, host)
        except psycopg.Error as exc:
            self._db.error("removing rows of dead supervisors", exc)
            return
        if gone:
            self._log.info("removed status rows of supervisors no longer running", supervisors=gone)

    # -- systemd ------------------------------------------------------------------------

    def refresh_status_line(self, view: View) -> None:
        parts = [f"{len(view.workers)}/{view.target} workers"]
        if self._queue:
            parts.append(f"{self._queue['runnable']} runnable, {self._queue['leased']} leased")
        if self._docs_per_second is not None:
            parts.append(f"{self._docs_per_second:.2f} docs/s")
        if view.state not in ("running", "starting"):
            parts.append(view.state)
        if view.reloading:
            parts.append("reloading")
        self.status_line = "; ".join(parts)

    def ready(self, view: View | None = None) -> None:
        """READY=1 with the status line (``view``: brought up to date first)."""
        if view is not None:
            self.refresh_status_line(view)
        self.notify(lambda: self.notifier.ready(self.status_line or None))

    def stopping(self, view: View) -> None:
        self.refresh_status_line(view)
        self.notify(lambda: self.notifier.stopping(self.status_line or None))

    def reloading(self) -> None:
        self.notify(self.notifier.reloading)

    def watchdog(self, now: float) -> None:
        if now < self._next_watchdog:
            return
        interval = self.notifier.watchdog_interval()
        self._next_watchdog = now + min(
            WATCHDOG_SECONDS, interval / 2 if interval else WATCHDOG_SECONDS
        )
        self.notify(self.notifier.watchdog)

    def notify(self, send: Callable[[], object]) -> None:
        try:
            send()
        except SdNotifyError as exc:
            now = time.monotonic()
            if now - self._notify_error_logged_at >= ERROR_LOG_SECONDS:
                self._notify_error_logged_at = now
                self._log.error("sd_notify failed", error=str(exc))

    # -- the rows -----------------------------------------------------------------------

    def _refresh_queue_stats(self, conn: psycopg.Connection[Any]) -> None:
        self._queue = reports.queue_summary(conn)
        counts = reports.counts_by_status(conn)
        self._docs_per_second = reports.completed_since(conn, 60.0) / 60.0
        with self.metrics.pipeline() as batch:
            for status, n in counts.items():
                batch.gauge(f"queue.depth.{status}", n)
            batch.gauge("queue.oldest_runnable_age", self._queue["oldest_runnable_age_seconds"])

    def _details(self, view: View) -> dict[str, Any]:
        http = next((c for c in view.children if c.kind is Kind.HTTP), None)
        return {
            "workers_target": view.target,
            "workers_alive": len(view.workers),
            "drain": view.drain,
            "reloading": view.reloading,
            "settings_version": view.settings_version,
            "http_pid": http.pid if http else None,
            "http_heartbeat_age_seconds": (
                round(http.heartbeat_age(time.monotonic()), 3) if http and http.heartbeats else None
            ),
            "restarts": dict(view.restarts),
            "pending_releases": view.pending_releases,
            "queue": {
                k: self._queue[k]
                for k in ("runnable", "leased", "oldest_runnable_age_seconds")
                if k in self._queue
            },
            "docs_per_second": self._docs_per_second,
            "breakers": worst_breakers(view.workers),
            "config_path": view.config_path,
        }


def worker_row(child: Child, now: float) -> dict[str, Any]:
    return {
        "slot": child.slot,
        "pid": child.pid,
        "owner": child.owner,
        "started_at": child.started_at,
        "heartbeat_age": child.heartbeat_age(now) if child.heartbeats else None,
        "uss_bytes": child.memory.last_uss,
        "document_id": child.document_id,
        "stage": child.stage,
        "documents_done": child.documents_done,
    }


def worst_breakers(workers: Sequence[Child]) -> dict[str, str]:
    """Each service's circuit breaker as the worst worker sees it (open > half-open)."""
    breakers: dict[str, str] = {}
    for child in workers:
        for service, state in child.breakers.items():
            if _BREAKER_SEVERITY.get(state, 0) >= _BREAKER_SEVERITY.get(
                breakers.get(service, "closed"), 0
            ):
                breakers[service] = state
    return breakers
