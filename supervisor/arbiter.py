"""The supervisor: one process that keeps N shared-nothing workers (and the HTTP
child) alive for months.

Layout after gunicorn's arbiter: one ``run()`` loop that sleeps until a child
speaks, a signal arrives or a deadline is due, then, in order: reads heartbeats,
reaps dead children (release their documents at once, count, report, schedule
the respawn), handles queued signals (one small ``handle_*`` method each), checks
liveness (stale heartbeat, stage deadline, memory, recycling), keeps the worker
count, and publishes its view to PostgreSQL and systemd. Signal handlers only
enqueue (``supervisor.signals``).

Nothing holding a socket or a lock is created before the first fork: migrations
run on their own connection, closed before forking; the supervisor's own
connection is closed before every later fork and reopened lazily. Metrics,
Sentry and sd_notify sockets exist from after the first fork; a child never uses
them (each child makes its own).

Exit codes: 0 stopped on request (TERM, INT, QUIT) or ``--drain`` finished;
1 crash loop (``crash_loop_limit`` rapid failures within
``crash_loop_window_seconds``); 78 a worker reported a configuration error.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import selectors
import signal
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import conninfo

from ingestd.shared.channel import ChannelReader
from ingestd.shared.child import die_with_parent, leave
from ingestd.shared.db import jobs, reports
from ingestd.shared.db.connect import connect, database_url
from ingestd.shared.db.migrate import migrate
from ingestd.shared.errors import ConfigError, ErrorClass
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_CRASH_LOOP, EXIT_OK
from ingestd.shared.settings import Settings, load_settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import sentry
from ingestd.shared.telemetry.context import STAGES
from ingestd.shared.telemetry.logs import configure_logging, get_logger, reopen_log_files
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.telemetry.scrub import register_settings_secrets
from ingestd.supervisor import control
from ingestd.supervisor.children import Child, Death, Kind, Reason, classify
from ingestd.supervisor.memory import MemoryLimits, Verdict, megabytes, read_uss
from ingestd.supervisor.proctitle import http_title, set_title, supervisor_title, worker_title
from ingestd.supervisor.restarts import RestartPolicy
from ingestd.supervisor.sdnotify import SdNotifyError, SystemdNotifier
from ingestd.supervisor.signals import SignalQueue, blocked
from ingestd.supervisor.signals import name as signal_name

# After SIGTERM (stale heartbeat) or SIGINT (stage deadline), SIGKILL if the worker
# is still there this long after (bounded by the heartbeat timeout: a test with a 1 s
# timeout wants a 1 s grace, production gets 5 s).
KILL_GRACE_SECONDS = 5.0
# INT/QUIT: how long workers get to exit before SIGKILL (bounded by the drain timeout).
FAST_STOP_SECONDS = 5.0
PUBLISH_SECONDS = 1.0
# queue_summary and counts_by_status scan ``documents``: not every second.
QUEUE_STATS_SECONDS = 10.0
DRAIN_CHECK_SECONDS = 1.0
WATCHDOG_SECONDS = 1.0
MAX_SLEEP_SECONDS = 0.5
# Repeated database errors are logged at most this often (with a count), not every second.
DB_ERROR_LOG_SECONDS = 30.0
MAX_WORKERS = 256
# The loop has children to watch: it must never wait on the database for long. Bounded
# connect, statements, and waits on a dead network (libpq ignores the last for Unix sockets).
DB_CONNECT_TIMEOUT_SECONDS = 5
DB_STATEMENT_TIMEOUT_MS = 10_000
DB_TCP_USER_TIMEOUT_MS = 10_000

WorkerTarget = Callable[[Settings, int, str, int], Any]
HttpTarget = Callable[[Settings, int], Any]

_BREAKER_SEVERITY = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class PendingRelease:
    """A dead worker's documents we could not release yet (database unreachable)."""

    owner: str
    label: str
    release_class: ErrorClass | None
    message: str


class Arbiter:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: str | Path | None = None,
        drain: bool = False,
        worker_target: WorkerTarget | None = None,
        with_http: bool = True,
        http_target: HttpTarget | None = None,
        reload_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        """``worker_target`` defaults to ``workers.process.worker_main`` and
        ``http_target`` to ``supervisor.http.app.http_main``; tests pass fakes.
        ``reload_overrides`` are re-applied on every SIGHUP reload (e.g. the CLI's
        ``--workers``, which outranks the configuration file)."""
        self.settings = settings
        self.config_path = config_path
        self.drain = drain
        self.with_http = with_http
        self._worker_target = worker_target
        self._http_target = http_target
        self._reload_overrides = {
            k: v for k, v in (reload_overrides or {}).items() if v is not None
        }
        self.target = settings.workers
        self.hostname = control.hostname()
        self.pid = os.getpid()
        self.id = control.supervisor_id(self.hostname, self.pid)
        self.started_at = datetime.now(UTC)
        self.children: dict[int, Child] = {}

        self._log = get_logger("ingestd.supervisor")
        self._signals = SignalQueue()
        self._selector = selectors.PollSelector()  # no kernel object for children to inherit
        self._restarts = RestartPolicy(
            settings.restart_backoff_base_seconds,
            settings.restart_backoff_max_seconds,
            settings.crash_loop_limit,
            settings.crash_loop_window_seconds,
        )
        self._limits = MemoryLimits.from_settings(settings)
        self._respawn_at: dict[tuple[Kind, int], float] = {}
        self._generations = itertools.count()
        self._settings_version = 0
        self._reloading = False
        self._ready = False
        self._state = "starting"
        self._stopping = False
        self._fast = False
        self._exit_code = EXIT_OK
        self._stop_deadline = 0.0
        self._url = ""
        self._db: psycopg.Connection[Any] | None = None
        self._pending_releases: list[PendingRelease] = []
        self._restart_counts: Counter[str] = Counter()
        self._queue: dict[str, Any] = {}
        self._docs_per_second: float | None = None
        self._status_line = ""
        self._profile_forwarded: dict[int, str] = {}
        self._rng = random.Random()
        self._metrics = Metrics(None, role="supervisor")
        self._notifier = SystemdNotifier(None)
        self._db_error_logged_at: dict[str, float] = {}
        self._db_errors_suppressed: Counter[str] = Counter()
        self._notify_error_logged_at = -DB_ERROR_LOG_SECONDS
        self._next_publish = 0.0
        self._next_queue_stats = 0.0
        self._next_memory = 0.0
        self._next_drain_check = 0.0
        self._next_watchdog = 0.0
        self._handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGHUP: self.handle_hup,
            signal.SIGTTIN: self.handle_ttin,
            signal.SIGTTOU: self.handle_ttou,
            signal.SIGUSR1: self.handle_usr1,
            signal.SIGUSR2: self.handle_usr2,
        }

    # -- life -------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; return the process exit code."""
        self.pid = os.getpid()
        self.id = control.supervisor_id(self.hostname, self.pid)
        self.started_at = datetime.now(UTC)
        _configure_logging(self.settings)
        register_settings_secrets(self.settings)
        # Read (and remove from the environment) before forking: workers must not inherit
        # NOTIFY_SOCKET. The notifier opens its socket on first use, after the first fork.
        self._notifier = SystemdNotifier.from_environment()
        self._resolve_targets()
        self._url = database_url(self.settings)
        migrate(self._url)
        _check_embedding_space(self._url, self.settings)
        self._forget_dead_supervisors()
        control.write_pid_file(self.settings, self.pid)
        self._signals.install()
        self._selector.register(self._signals.wakeup_fd, selectors.EVENT_READ)
        self._update_title()
        self._log.info(
            "supervisor starting",
            workers=self.target,
            drain=self.drain,
            supervisor=self.id,
            config=str(self.config_path or ""),
        )
        try:
            self._spawn_missing(time.monotonic())
            self._metrics = _make_metrics(self.settings)
            sentry.init_sentry(
                self.settings.sentry_dsn, self.settings.sentry_environment, "supervisor", None
            )
            return self._loop()
        except BaseException:
            self._log.exception("supervisor failed; stopping its children")
            self._emergency_stop()
            raise
        finally:
            self._cleanup()

    def _loop(self) -> int:
        while True:
            self._sleep()
            now = time.monotonic()
            self._read_channels(now)
            self._reap(now)
            for signum in self._signals:
                self._dispatch(signum)
            now = time.monotonic()
            if self._stopping:
                self._advance_stop(now)
            else:
                self._supervise(now)
            self._escalate(now)
            self._publish(now)
            self._watchdog(now)
            if self._stopping and not self.children:
                return self._exit_code

    def _supervise(self, now: float) -> None:
        self._check_liveness(now)
        if now >= self._next_memory:
            self._next_memory = now + self.settings.memory_check_seconds
            self._check_memory(now)
        self._check_recycling(now)
        self._scale_down(now)
        self._advance_reload(now)
        self._spawn_missing(now)
        self._check_ready()
        if self.drain and self._ready and now >= self._next_drain_check:
            self._next_drain_check = now + DRAIN_CHECK_SECONDS
            self._check_drain()

    # -- signals: each handler is what the signal means ----------------------------------

    def _dispatch(self, signum: int) -> None:
        handler = self._handlers.get(signum)
        if handler is None:  # pragma: no cover - only HANDLED signals are queued
            return
        self._log.info("signal received", signal=signal_name(signum))
        handler()

    def handle_term(self) -> None:
        """Graceful: workers finish or checkpoint their batch, then exit 0."""
        self._begin_stop(EXIT_OK, graceful=True, why="SIGTERM")

    def handle_int(self) -> None:
        """Fast: workers exit at once; their documents are released without an attempt."""
        self._begin_stop(EXIT_OK, graceful=False, why="SIGINT")

    def handle_quit(self) -> None:
        self._begin_stop(EXIT_OK, graceful=False, why="SIGQUIT")

    def handle_hup(self) -> None:
        """Reload the configuration, then replace the children one by one."""
        if self._stopping:
            self._log.info("reload ignored: stopping")
            return
        self._notify(self._notifier.reloading)
        try:
            settings = load_settings(self.config_path, **self._reload_overrides)
        except ConfigError as exc:
            self._log.error("reload failed; keeping the running configuration", error=str(exc))
            self._notify(lambda: self._notifier.ready(self._status_line or None))
            return
        self._apply_settings(settings)

    def handle_ttin(self) -> None:
        if self._stopping:
            return
        self.target = min(MAX_WORKERS, self.target + 1)
        self._log.info("worker count changed", workers=self.target)
        self._update_title()

    def handle_ttou(self) -> None:
        if self._stopping:
            return
        self.target = max(1, self.target - 1)
        self._log.info("worker count changed", workers=self.target)
        self._update_title()

    def handle_usr1(self) -> None:
        """Reopen log files (after logrotate); the children reopen theirs on SIGHUP."""
        reopened = reopen_log_files()
        self._log.info("log files reopened", files=reopened)
        for child in self.children.values():
            self._send(child, signal.SIGHUP)

    def handle_usr2(self) -> None:
        """Forward profile requests (``ingestd profile --slot N``) to their workers."""
        profiles = self.settings.home / control.PROFILES_DIR
        for path in sorted(profiles.glob("request-*.json")):
            request = control.read_profile_request(path)
            if request is None or not isinstance(request.get("slot"), int):
                continue
            slot, request_id = request["slot"], str(request.get("id", ""))
            if self._profile_forwarded.get(slot) == request_id:
                continue
            child = self._worker_in(slot)
            if child is None:
                self._log.warning("profile request for a slot without a worker", worker_slot=slot)
                continue
            self._profile_forwarded[slot] = request_id
            self._send(child, signal.SIGUSR1)
            self._log.info(
                "profile requested",
                worker_slot=slot,
                worker_pid=child.pid,
                path=str(request.get("path", "")),
            )

    # -- children: start -----------------------------------------------------------------

    def _resolve_targets(self) -> None:
        """Import the children's entry points in the supervisor, before forking: a missing
        module fails ``ingestd run`` now, not every child forever; and the imported code is
        shared copy-on-write by every child."""
        if self._worker_target is None:
            from ingestd.workers.process import worker_main

            self._worker_target = worker_main
        if self.with_http and self._http_target is None:
            from ingestd.supervisor.http.app import http_main

            self._http_target = http_main
        from ingestd.workers.process import preload

        preload(self.settings)

    def _spawn_missing(self, now: float) -> None:
        occupied = {(c.kind, c.slot) for c in self.children.values()}
        wanted = [(Kind.WORKER, slot) for slot in range(self.target)]
        if self.with_http:
            wanted.append((Kind.HTTP, 0))
        for key in [k for k in self._respawn_at if k not in wanted]:
            del self._respawn_at[key]  # scaled away while waiting for its respawn
        due = [
            key for key in wanted if key not in occupied and now >= self._respawn_at.get(key, 0.0)
        ]
        if not due:
            return
        self._close_db()  # a child must not inherit the supervisor's connection
        for kind, slot in due:
            self._spawn(kind, slot, now)

    def _spawn(self, kind: Kind, slot: int, now: float) -> None:
        generation = next(self._generations)
        owner = f"{self.hostname}:{self.pid}:{slot if kind is Kind.WORKER else 'http'}:{generation}"
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            with blocked() as mask:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which never returns
                    self._become_child(kind, slot, owner, read_fd, write_fd, mask)
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            self._log.error("fork failed", kind=str(kind), worker_slot=slot, error=str(exc))
            self._schedule_respawn(kind, slot, now, lifetime=0.0, failure=True)
            return
        os.close(write_fd)
        child = Child(
            kind=kind,
            slot=slot,
            pid=pid,
            owner=owner,
            generation=generation,
            reader=ChannelReader(read_fd),
            started=now,
            started_at=datetime.now(UTC),
            settings_version=self._settings_version,
            stage_since=now,
        )
        try:
            child.process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            child.process = None  # already dead: reaped on this loop pass
        self._set_recycle_limits(child, now)
        self.children[pid] = child
        self._selector.register(read_fd, selectors.EVENT_READ)
        self._respawn_at.pop((kind, slot), None)
        self._log.info(
            "worker started" if kind is Kind.WORKER else "http child started",
            worker_slot=slot,
            worker_pid=pid,
            owner=owner,
        )

    def _become_child(  # pragma: no cover - runs in the child
        self,
        kind: Kind,
        slot: int,
        owner: str,
        read_fd: int,
        write_fd: int,
        mask: set[signal.Signals],
    ) -> None:
        code = EXIT_CRASH
        try:
            self._signals.reset_in_child()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            for other in self.children.values():
                if other.channel_open:
                    os.close(other.reader.fd)
            self._metrics.close()
            self._notifier.close()
            die_with_parent(self.pid)
            set_title(worker_title(slot) if kind is Kind.WORKER else http_title())
            if kind is Kind.WORKER:
                assert self._worker_target is not None
                self._worker_target(self.settings, slot, owner, write_fd)
            else:
                assert self._http_target is not None
                self._http_target(self.settings, write_fd)
            code = EXIT_OK  # a target that returns (NoReturn broken) finished normally
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = EXIT_OK  # SIGINT: the fast stop it asks for
        except BaseException:
            traceback.print_exc()
            code = EXIT_CRASH
        finally:
            leave(code)

    def _set_recycle_limits(self, child: Child, now: float) -> None:
        if child.kind is not Kind.WORKER:
            return
        s = self.settings
        if s.recycle_after_documents is not None:
            extra = round(s.recycle_after_documents * self._rng.uniform(0, s.recycle_jitter))
            child.recycle_after_documents = s.recycle_after_documents + extra
        if s.recycle_after_seconds is not None:
            child.recycle_at = now + s.recycle_after_seconds * (
                1 + self._rng.uniform(0, s.recycle_jitter)
            )

    # -- children: listen, watch ---------------------------------------------------------

    def _sleep(self) -> None:
        timeout = max(0.0, min(MAX_SLEEP_SECONDS, self._next_deadline() - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.fd == self._signals.wakeup_fd:
                self._signals.clear()

    def _next_deadline(self) -> float:
        due = [self._next_publish, self._next_watchdog]
        if not self._stopping:
            due.append(self._next_memory)
            due.extend(self._respawn_at.values())
        due.extend(
            c.kill_at for c in self.children.values() if c.kill_at is not None and not c.escalated
        )
        return min(due)

    def _read_channels(self, now: float) -> None:
        for child in list(self.children.values()):
            self._read_channel(child, now)

    def _read_channel(self, child: Child, now: float) -> None:
        if not child.channel_open:
            return
        messages, eof = child.reader.read()
        for msg in messages:
            if isinstance(msg, dict):
                child.on_message(msg, now)
        if eof:
            self._close_channel(child)

    def _close_channel(self, child: Child) -> None:
        if child.channel_open:
            self._selector.unregister(child.reader.fd)
            os.close(child.reader.fd)
            child.channel_open = False

    def _check_liveness(self, now: float) -> None:
        s = self.settings
        grace = min(KILL_GRACE_SECONDS, s.heartbeat_timeout_seconds)
        for child in list(self.children.values()):
            if child.kill_reason is not None or child.escalated:
                continue
            # The HTTP child is held to heartbeats once it has shown it sends them.
            if child.kind is Kind.HTTP and child.heartbeats == 0:
                continue
            age = child.heartbeat_age(now)
            if age > s.heartbeat_timeout_seconds:
                self._kill(
                    child,
                    Reason.HEARTBEAT,
                    signal.SIGTERM,
                    now,
                    grace,
                    f"no heartbeat for {age:.1f}s (timeout {s.heartbeat_timeout_seconds}s)",
                )
                continue
            stage_age = child.stage_age(now)
            if (
                child.kind is Kind.WORKER
                and stage_age is not None
                and (stage_age > s.stage_deadline_seconds)
            ):
                self._kill(
                    child,
                    Reason.DEADLINE,
                    signal.SIGINT,
                    now,
                    grace,
                    f"stage {child.stage} of document {child.document_id} ran "
                    f"{stage_age:.1f}s (deadline {s.stage_deadline_seconds}s)",
                )

    def _check_memory(self, now: float) -> None:
        limits = self._limits
        for child in self._workers():
            if child.escalated or child.process is None:
                continue
            try:
                uss = read_uss(child.process)
            except psutil.NoSuchProcess:
                continue  # exiting: reaped on a coming pass
            except psutil.Error as exc:
                if not child.memory_unreadable:
                    child.memory_unreadable = True
                    self._log.error(
                        "cannot read the worker's memory: no ceiling enforced",
                        worker_slot=child.slot,
                        worker_pid=child.pid,
                        error=repr(exc),
                    )
                continue
            verdict = child.memory.observe(uss, limits)
            self._metrics.gauge(f"worker.{child.slot}.uss", uss)
            if verdict is Verdict.HARD:
                self._kill(
                    child,
                    Reason.MEMORY,
                    signal.SIGKILL,
                    now,
                    0.0,
                    f"USS {megabytes(uss)} MB over the hard ceiling "
                    f"{megabytes(limits.hard_bytes)} MB",
                )
            elif (
                verdict is Verdict.SOFT
                and child.stop_reason is None
                and (child.kill_reason is None)
            ):
                self._log.warning(
                    "worker over the soft memory ceiling: recycling after its batch",
                    worker_slot=child.slot,
                    worker_pid=child.pid,
                    uss_mb=megabytes(uss),
                    soft_mb=megabytes(limits.soft_bytes),
                    strikes=child.memory.strikes,
                )
                self._request_stop(child, Reason.RECYCLE, signal.SIGUSR2, now, grace=None)

    def _check_recycling(self, now: float) -> None:
        for child in self._workers():
            if child.stop_reason is not None or child.kill_reason is not None:
                continue
            why = None
            if child.recycle_after_documents is not None and (
                child.documents_done >= child.recycle_after_documents
            ):
                why = f"{child.documents_done} documents done"
            elif child.recycle_at is not None and now >= child.recycle_at:
                why = f"{child.lifetime(now):.0f}s old"
            if why is not None:
                self._log.info(
                    "recycling worker", worker_slot=child.slot, worker_pid=child.pid, why=why
                )
                self._request_stop(child, Reason.RECYCLE, signal.SIGUSR2, now, grace=None)

    def _scale_down(self, now: float) -> None:
        for child in self._workers():
            if (
                child.slot >= self.target
                and child.stop_reason is None
                and (child.kill_reason is None)
            ):
                self._request_stop(
                    child,
                    Reason.SCALE_DOWN,
                    signal.SIGTERM,
                    now,
                    grace=self.settings.drain_timeout_seconds,
                )

    def _check_ready(self) -> None:
        if self._ready:
            return
        for slot in range(self.target):
            child = self._worker_in(slot)
            if child is None or child.heartbeats == 0:
                return
        self._ready = True
        self._state = "running"
        self._log.info("supervisor ready", workers=self.target)
        self._refresh_status_line()
        self._notify(lambda: self._notifier.ready(self._status_line or None))

    def _check_drain(self) -> None:
        try:
            outstanding = control.outstanding_documents(self._conn())
        except psycopg.Error as exc:
            self._db_error("drain check", exc)
            return
        if outstanding == 0:
            self._log.info("drain finished: nothing runnable or in flight")
            self._begin_stop(EXIT_OK, graceful=True, why="drain finished")

    # -- children: end -------------------------------------------------------------------

    def _kill(
        self, child: Child, reason: Reason, sig: int, now: float, grace: float, detail: str
    ) -> None:
        child.kill_reason, child.kill_detail = reason, detail
        self._log.error(
            "killing worker" if child.kind is Kind.WORKER else "killing http child",
            worker_slot=child.slot,
            worker_pid=child.pid,
            reason=str(reason),
            detail=detail,
            signal=signal_name(sig),
            document_id=child.document_id,
            stage=child.stage,
        )
        self._send(child, sig)
        if sig == signal.SIGKILL:
            child.escalated, child.kill_at = True, None
        else:
            child.kill_at = now + grace

    def _request_stop(
        self, child: Child, reason: Reason, sig: int, now: float, grace: float | None
    ) -> None:
        """A planned stop: the child finishes its batch and exits 0. ``grace``: SIGKILL
        after that long (None: no limit; the heartbeat and stage deadline still apply)."""
        child.stop_reason, child.stop_signal = reason, sig
        self._send(child, sig)
        if grace is not None:
            deadline = now + grace
            child.kill_at = deadline if child.kill_at is None else min(child.kill_at, deadline)

    def _send(self, child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # exiting: the reaper will tell
            os.kill(child.pid, sig)

    def _escalate(self, now: float) -> None:
        for child in self.children.values():
            if child.kill_at is not None and not child.escalated and now >= child.kill_at:
                self._log.warning(
                    "grace period over: SIGKILL",
                    worker_slot=child.slot,
                    worker_pid=child.pid,
                    kind=str(child.kind),
                    reason=str(child.kill_reason or child.stop_reason),
                )
                child.escalated = True
                self._send(child, signal.SIGKILL)

    def _reap(self, now: float) -> None:
        for child in list(self.children.values()):
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                self._log.error(
                    "child vanished: its exit status was collected elsewhere", worker_pid=child.pid
                )
                self._on_exit(child, None, now)
                continue
            if pid != 0:
                self._on_exit(child, status, now)

    def _on_exit(self, child: Child, wait_status: int | None, now: float) -> None:
        self._read_channel(child, now)  # its last words
        self._close_channel(child)
        del self.children[child.pid]
        death = (
            classify(child, wait_status)
            if wait_status is not None
            else Death(Reason.CRASH, None, None, "vanished")
        )
        if child.kind is Kind.WORKER:
            self._release_documents(child, death)
        if death.reason.replaced:
            segment = str(death.reason) if child.kind is Kind.WORKER else "http"
            self._restart_counts[segment] += 1
            self._metrics.incr(f"worker.restarts.{segment}")
        if death.report:
            self._report_death(child, death)
        log = self._log.info if death.reason.planned else self._log.error
        log(
            "worker exited" if child.kind is Kind.WORKER else "http child exited",
            worker_slot=child.slot,
            worker_pid=child.pid,
            reason=str(death.reason),
            exit_code=death.exit_code,
            detail=death.detail,
            signal=signal_name(death.signal) if death.signal else None,
            lifetime_seconds=round(child.lifetime(now), 3),
            document_id=child.document_id,
            stage=child.stage,
            documents_done=child.documents_done,
            uss_mb=megabytes(child.memory.last_uss),
        )
        if self._stopping or death.reason is Reason.SCALE_DOWN:
            return
        if death.reason is Reason.CONFIG:
            self._log.critical(
                "a worker reported a configuration error: giving up",
                worker_slot=child.slot,
                worker_pid=child.pid,
            )
            self._begin_stop(EXIT_CONFIG, graceful=True, why="configuration error")
            return
        self._schedule_respawn(
            child.kind, child.slot, now, lifetime=child.lifetime(now), failure=death.failure
        )

    def _schedule_respawn(
        self, kind: Kind, slot: int, now: float, *, lifetime: float, failure: bool
    ) -> None:
        decision = self._restarts.record((kind, slot), now=now, lifetime=lifetime, failure=failure)
        if decision.give_up:
            self._log.critical(
                "crash loop: giving up",
                rapid_failures=decision.rapid_failures,
                limit=self.settings.crash_loop_limit,
                window_seconds=self.settings.crash_loop_window_seconds,
            )
            self._begin_stop(EXIT_CRASH_LOOP, graceful=True, why="crash loop")
            return
        self._respawn_at[(kind, slot)] = now + decision.delay
        if failure:
            self._log.warning(
                "restart scheduled",
                kind=str(kind),
                worker_slot=slot,
                delay_seconds=decision.delay,
                streak=decision.streak,
                rapid_failures=decision.rapid_failures,
                limit=self.settings.crash_loop_limit,
            )

    def _release_documents(self, child: Child, death: Death) -> None:
        pending = PendingRelease(
            child.owner,
            f"{child.label} (pid {child.pid})",
            death.release_class,
            f"{child.label} (pid {child.pid}) {death.detail}",
        )
        try:
            self._release(pending)
        except psycopg.Error as exc:
            self._pending_releases.append(pending)
            self._db_error("releasing a dead worker's documents (will retry)", exc)

    def _release(self, pending: PendingRelease) -> None:
        conn = self._conn()
        s = self.settings
        if pending.release_class is None:
            for doc_id in control.leased_by(conn, pending.owner):
                if jobs.release(conn, doc_id, pending.owner, reason=pending.message):
                    self._log.info(
                        "document released",
                        document_id=str(doc_id),
                        worker=pending.label,
                        attempt_counted=False,
                    )
            return
        released = jobs.release_worker_leases(
            conn,
            pending.owner,
            error_class=pending.release_class,
            message=pending.message,
            max_attempts=s.max_attempts,
            retry_base=s.retry_base_seconds,
            retry_cap=s.retry_max_seconds,
        )
        for doc_id, outcome in released:
            self._log.warning(
                "document released",
                document_id=str(doc_id),
                worker=pending.label,
                error_class=str(pending.release_class),
                to_status=str(outcome.status),
                attempts=outcome.attempts,
                attempt_counted=True,
            )
            if outcome.status is Status.DEAD:
                self._metrics.incr(f"documents.dead.{pending.release_class}")

    def _retry_releases(self) -> None:
        while self._pending_releases:
            try:
                self._release(self._pending_releases[0])
            except psycopg.Error as exc:
                self._db_error("releasing a dead worker's documents (will retry)", exc)
                return
            self._pending_releases.pop(0)

    def _report_death(self, child: Child, death: Death) -> None:
        correlation_id = None
        if child.document_id is not None:
            try:
                doc = reports.document(self._conn(), uuid.UUID(child.document_id))
                correlation_id = doc["correlation_id"] if doc else None
            except (psycopg.Error, ValueError) as exc:
                self._log.warning(
                    "could not look up the document's correlation id",
                    document_id=child.document_id,
                    error=str(exc),
                )
                self._close_db()
        reason = str(death.reason) if child.kind is Kind.WORKER else f"http {death.reason}"
        sentry.capture_worker_death(
            child.slot,
            child.pid,
            reason,
            child.document_id,
            correlation_id,
            stage=child.stage if child.stage in STAGES else None,
        )

    # -- stopping -----------------------------------------------------------------------

    def _begin_stop(self, code: int, *, graceful: bool, why: str) -> None:
        now = time.monotonic()
        if self._stopping:
            if graceful or self._fast:
                return
            # A fast stop requested during a graceful one: hurry up.
            self._fast = True
            self._stop_deadline = min(self._stop_deadline, now + self._fast_grace())
            self._log.warning("fast stop requested during the drain", why=why)
            for child in list(self.children.values()):
                self._stop_child(child, signal.SIGINT, self._stop_deadline)
            return
        self._stopping, self._fast, self._exit_code = True, not graceful, code
        self._state = "draining" if graceful else "stopping"
        grace = self.settings.drain_timeout_seconds if graceful else self._fast_grace()
        self._stop_deadline = now + grace
        self._log.info(
            "stopping",
            why=why,
            graceful=graceful,
            exit_code=code,
            grace_seconds=grace,
            children=len(self.children),
        )
        self._refresh_status_line()
        self._notify(lambda: self._notifier.stopping(self._status_line or None))
        sig = signal.SIGTERM if graceful else signal.SIGINT
        for child in list(self.children.values()):
            # The HTTP child keeps answering /v1/status while workers drain.
            if child.kind is Kind.WORKER or not graceful:
                self._stop_child(child, sig, self._stop_deadline)
        self._update_title()

    def _stop_child(self, child: Child, sig: int, deadline: float) -> None:
        if child.kill_reason is None:
            child.stop_reason, child.stop_signal = Reason.SHUTDOWN, sig
        self._send(child, sig)
        if not child.escalated:
            child.kill_at = deadline if child.kill_at is None else min(child.kill_at, deadline)

    def _advance_stop(self, now: float) -> None:
        if any(c.kind is Kind.WORKER for c in self.children.values()):
            return
        # The workers are gone (at the latest, SIGKILLed at the drain deadline): the HTTP
        # child gets a short grace of its own.
        for child in list(self.children.values()):
            if child.stop_reason is None and child.kill_reason is None:
                self._stop_child(child, signal.SIGTERM, now + self._fast_grace())

    def _fast_grace(self) -> float:
        return min(FAST_STOP_SECONDS, self.settings.drain_timeout_seconds)

    def _emergency_stop(self) -> None:
        """The supervisor itself failed: stop every child now and give back their documents."""
        for child in self.children.values():
            self._send(child, signal.SIGINT)
        deadline = time.monotonic() + self._fast_grace()
        while self.children and time.monotonic() < deadline:
            for child in list(self.children.values()):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(child.pid, os.WNOHANG)[0] == 0:
                        continue
                self._forget_child(child)
            time.sleep(0.05)  # polling children that got SIGINT; no event to wait on
        for child in list(self.children.values()):
            self._send(child, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            self._forget_child(child)

    def _forget_child(self, child: Child) -> None:
        self.children.pop(child.pid, None)
        if child.kind is Kind.WORKER:
            self._pending_releases.append(
                PendingRelease(
                    child.owner,
                    f"{child.label} (pid {child.pid})",
                    None,
                    f"{child.label} (pid {child.pid}) stopped: the supervisor failed",
                )
            )

    def _cleanup(self) -> None:
        self._retry_releases()
        if self._pending_releases:
            self._log.error(
                "could not release the documents of dead workers; their leases expire "
                "by themselves",
                owners=[p.owner for p in self._pending_releases],
                lease_seconds=self.settings.lease_seconds,
            )
        try:
            control.withdraw(self._conn(), self.id)
        except psycopg.Error as exc:
            self._db_error("removing this supervisor's status rows", exc)
        self._close_db()
        control.remove_pid_file(self.settings, self.pid)
        self._signals.uninstall()
        self._notifier.close()
        self._metrics.close()
        sentry.flush()
        self._log.info(
            "supervisor exited", exit_code=self._exit_code, restarts=dict(self._restart_counts)
        )

    # -- reload and scaling -----------------------------------------------------------------

    def _apply_settings(self, new: Settings) -> None:
        """Switch to ``new``. What can fail (database, log file, metrics) is set up first,
        so a failed reload leaves the running configuration untouched."""
        old = self.settings
        try:
            url = database_url(new)
            if url != self._url:
                migrate(url)
            _check_embedding_space(url, new)
            _configure_logging(new)
            metrics = None
            if (new.statsd_host, new.statsd_port, new.statsd_prefix) != (
                old.statsd_host,
                old.statsd_port,
                old.statsd_prefix,
            ):
                metrics = _make_metrics(new)
        except (ConfigError, OSError, ValueError, psycopg.Error) as exc:
            _configure_logging(old)
            self._log.error(
                "reload failed; keeping the running configuration",
                error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            self._notify(lambda: self._notifier.ready(self._status_line or None))
            return
        if metrics is not None:
            self._metrics.close()
            self._metrics = metrics
        if url != self._url:
            self._close_db()
            self._url = url
        register_settings_secrets(new)
        self.settings = new
        self.target = new.workers
        self._limits = MemoryLimits.from_settings(new)
        self._restarts.configure(
            base=new.restart_backoff_base_seconds,
            cap=new.restart_backoff_max_seconds,
            limit=new.crash_loop_limit,
            window=new.crash_loop_window_seconds,
        )
        self._settings_version += 1
        self._reloading = True
        self._log.info(
            "configuration reloaded; replacing children one by one",
            workers=self.target,
            version=self._settings_version,
        )
        self._update_title()

    def _advance_reload(self, now: float) -> None:
        if not self._reloading:
            return
        if any(c.stop_reason is Reason.RELOAD for c in self.children.values()):
            return
        # The previous replacement must be up (heartbeating) before the next one goes.
        for slot in range(self.target):
            child = self._worker_in(slot)
            if child is None or (
                child.settings_version == self._settings_version and child.heartbeats == 0
            ):
                return
        stale = sorted(
            (
                c
                for c in self.children.values()
                if c.settings_version < self._settings_version
                and c.stop_reason is None
                and c.kill_reason is None
            ),
            key=lambda c: (c.kind is Kind.HTTP, c.slot),
        )
        if not stale:
            self._reloading = False
            self._log.info("reload finished", workers=self.target)
            self._refresh_status_line()
            self._notify(lambda: self._notifier.ready(self._status_line or None))
            return
        self._request_stop(
            stale[0], Reason.RELOAD, signal.SIGTERM, now, grace=self.settings.drain_timeout_seconds
        )

    # -- publishing -----------------------------------------------------------------------

    def _publish(self, now: float) -> None:
        if now < self._next_publish:
            return
        self._next_publish = now + PUBLISH_SECONDS
        self._retry_releases()
        if now >= self._next_queue_stats:
            self._next_queue_stats = now + QUEUE_STATS_SECONDS
            try:
                self._refresh_queue_stats(self._conn())
            except psycopg.Error as exc:
                self._db_error("reading queue statistics", exc)
        try:
            control.publish(
                self._conn(),
                supervisor=self.id,
                pid=self.pid,
                host=self.hostname,
                started_at=self.started_at,
                state=self._state,
                details=self._details(),
                workers=[self._worker_row(c, now) for c in self._workers()],
            )
        except psycopg.Error as exc:
            self._db_error("publishing status", exc)
        self._metrics.gauge("workers.alive", len(self._workers()))
        line = self._status_line
        self._refresh_status_line()
        if self._status_line != line:
            self._notify(lambda: self._notifier.status(self._status_line))

    def _refresh_queue_stats(self, conn: psycopg.Connection[Any]) -> None:
        self._queue = reports.queue_summary(conn)
        counts = reports.counts_by_status(conn)
        self._docs_per_second = reports.completed_since(conn, 60.0) / 60.0
        with self._metrics.pipeline() as batch:
            for status, n in counts.items():
                batch.gauge(f"queue.depth.{status}", n)
            batch.gauge("queue.oldest_runnable_age", self._queue["oldest_runnable_age_seconds"])

    def _worker_row(self, child: Child, now: float) -> dict[str, Any]:
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

    def _details(self) -> dict[str, Any]:
        http = next((c for c in self.children.values() if c.kind is Kind.HTTP), None)
        breakers: dict[str, str] = {}
        for child in self._workers():
            for service, state in child.breakers.items():
                if _BREAKER_SEVERITY.get(state, 0) >= _BREAKER_SEVERITY.get(
                    breakers.get(service, "closed"), 0
                ):
                    breakers[service] = state
        return {
            "workers_target": self.target,
            "workers_alive": len(self._workers()),
            "drain": self.drain,
            "reloading": self._reloading,
            "settings_version": self._settings_version,
            "http_pid": http.pid if http else None,
            "http_heartbeat_age_seconds": (
                round(http.heartbeat_age(time.monotonic()), 3) if http and http.heartbeats else None
            ),
            "restarts": dict(self._restart_counts),
            "pending_releases": len(self._pending_releases),
            "queue": {
                k: self._queue[k]
                for k in ("runnable", "leased", "oldest_runnable_age_seconds")
                if k in self._queue
            },
            "docs_per_second": self._docs_per_second,
            "breakers": breakers,
            "config_path": str(self.config_path) if self.config_path else None,
        }

    def _refresh_status_line(self) -> None:
        parts = [f"{len(self._workers())}/{self.target} workers"]
        if self._queue:
            parts.append(f"{self._queue['runnable']} runnable, {self._queue['leased']} leased")
        if self._docs_per_second is not None:
            parts.append(f"{self._docs_per_second:.2f} docs/s")
        if self._state not in ("running", "starting"):
            parts.append(self._state)
        if self._reloading:
            parts.append("reloading")
        self._status_line = "; ".join(parts)

    def _watchdog(self, now: float) -> None:
        if now < self._next_watchdog:
            return
        interval = self._notifier.watchdog_interval()
        self._next_watchdog = now + min(
            WATCHDOG_SECONDS, interval / 2 if interval else WATCHDOG_SECONDS
        )
        self._notify(self._notifier.watchdog)

    def _notify(self, send: Callable[[], object]) -> None:
        try:
            send()
        except SdNotifyError as exc:
            now = time.monotonic()
            if now - self._notify_error_logged_at >= DB_ERROR_LOG_SECONDS:
                self._notify_error_logged_at = now
                self._log.error("sd_notify failed", error=str(exc))

    # -- plumbing ---------------------------------------------------------------------------

    def _workers(self) -> list[Child]:
        return [c for c in self.children.values() if c.kind is Kind.WORKER]

    def _worker_in(self, slot: int) -> Child | None:
        for child in self.children.values():
            if child.kind is Kind.WORKER and child.slot == slot:
                return child
        return None

    def _conn(self) -> psycopg.Connection[Any]:
        if self._db is None or self._db.closed:
            self._db = connect(
                _bounded(self._url), autocommit=True, application_name="ingestd-supervisor"
            )
        return self._db

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db = None

    def _db_error(self, what: str, exc: psycopg.Error) -> None:
        """Log (at most every DB_ERROR_LOG_SECONDS, with a count) and drop the connection."""
        self._close_db()
        now = time.monotonic()
        if now - self._db_error_logged_at.get(what, -DB_ERROR_LOG_SECONDS) < DB_ERROR_LOG_SECONDS:
            self._db_errors_suppressed[what] += 1
            return
        text = str(exc).strip()
        self._log.error(
            "database error",
            during=what,
            error=text.splitlines()[0] if text else type(exc).__name__,
            similar_errors_since_last_report=self._db_errors_suppressed.pop(what, 0),
        )
        self._db_error_logged_at[what] = now

    def _forget_dead_supervisors(self) -> None:
        try:
            with connect(
                _bounded(self._url), autocommit=True, application_name="ingestd-supervisor"
            ) as conn:
                gone = control.forget_dead_supervisors(conn, self.hostname)
        except psycopg.Error as exc:
            self._db_error("removing rows of dead supervisors", exc)
            return
        if gone:
            self._log.info("removed status rows of supervisors no longer running", supervisors=gone)

    def _update_title(self) -> None:
        state = "running" if self._state in ("running", "starting") else self._state
        set_title(supervisor_title(self.target, state))


def _configure_logging(s: Settings) -> None:
    configure_logging("supervisor", None, json=s.log_json, level=s.log_level, log_file=s.log_file)


def _make_metrics(s: Settings) -> Metrics:
    return Metrics.from_settings(s.statsd_host, s.statsd_port, s.statsd_prefix, role="supervisor")


def _bounded(url: str) -> str:
    params: dict[str, Any] = conninfo.conninfo_to_dict(url)
    options = str(params.get("options") or "")
    params["options"] = f"{options} -c statement_timeout={DB_STATEMENT_TIMEOUT_MS}".strip()
    params.setdefault("connect_timeout", DB_CONNECT_TIMEOUT_SECONDS)
    params.setdefault("tcp_user_timeout", DB_TCP_USER_TIMEOUT_MS)
    return conninfo.make_conninfo(**params)


def _check_embedding_space(url: str, settings: Settings) -> None:
    """Refuse to start (or reload) with an embedder that cannot work or that does not
    match the vectors already stored: before any worker is forked, with a message that
    says what to set or install."""
    from ingestd.shared.db.space import ensure_space
    from ingestd.shared.embedders.setup import space_for

    wanted = space_for(settings)
    with connect(url, autocommit=True, application_name="ingestd-supervisor-check") as conn:
        ensure_space(conn, wanted)
