"""The supervisor: one process that keeps N shared-nothing workers (and the HTTP
child) alive for months.

Shaped after gunicorn's arbiter: one ``run()`` loop that sleeps until a child speaks,
a signal arrives or a deadline is due, then, in order: reads heartbeats, reaps dead
children, handles queued signals (one small ``handle_*`` method each), checks liveness
(stale heartbeat, stage deadline, memory, recycling), keeps the worker count, and
publishes its view. Signal handlers only enqueue (``supervisor.signals``).

What it delegates: what a death means for documents, logs, metrics and Sentry
(``deaths``); status rows and systemd (``publish``); its database connection
(``database``); preparing a reloaded configuration and the order of replacements
(``reload``); judgements on one child (``watch``); the fork and what the child drops
(``fork``); the child's own start-up (``shared.child``, via the entry points).

Nothing holding a socket or a lock is created before the first fork: migrations
run on their own connection, closed before forking; the supervisor's own
connection is closed before every later fork and reopened lazily. Metrics,
Sentry and sd_notify sockets exist from after the first fork; a child never uses
them (each child makes its own).

Exit codes (``shared.exitcodes``): 0 stopped on request (TERM, INT, QUIT) or
``--drain`` finished; 1 crash loop (``crash_loop_limit`` rapid failures within
``crash_loop_window_seconds``, not counting deaths charged to the document the
worker held: ``restarts``), or ``--drain`` finished with documents dead at the service
wait horizon; 3 ``--drain`` stopped because only documents waiting on an unavailable
service were left (``supervisor.drain``); 78 a worker reported a configuration error.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import selectors
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from ingestd.shared.db.connect import database_url
from ingestd.shared.db.migrate import migrate
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH_LOOP, EXIT_OK
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry import sentry
from ingestd.shared.telemetry.logs import get_logger, reopen_log_files
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.telemetry.scrub import register_settings_secrets
from ingestd.supervisor import control, fork, reload, watch
from ingestd.supervisor.children import Child, Death, Kind, Reason, classify, log_fields
from ingestd.supervisor.database import (
    SupervisorDatabase,
    check_embedding_space,
    embedded_home,
)
from ingestd.supervisor.deaths import Deaths
from ingestd.supervisor.drain import DrainCheck
from ingestd.supervisor.live import LiveView
from ingestd.supervisor.memory import MemoryLimits, Verdict, megabytes
from ingestd.supervisor.proctitle import http_title, set_title, supervisor_title, worker_title
from ingestd.supervisor.publish import Publisher, View
from ingestd.supervisor.restarts import RestartPolicy
from ingestd.supervisor.sdnotify import SystemdNotifier
from ingestd.supervisor.signals import HANDLED, SignalQueue
from ingestd.supervisor.signals import name as signal_name

# After SIGTERM (stale heartbeat) or SIGINT (stage deadline), SIGKILL if the worker
# is still there this long after (bounded by the heartbeat timeout: a test with a 1 s
# timeout wants a 1 s grace, production gets 5 s).
KILL_GRACE_SECONDS = 5.0
# INT/QUIT: how long workers get to exit before SIGKILL (bounded by the drain timeout).
FAST_STOP_SECONDS = 5.0
DRAIN_CHECK_SECONDS = 1.0
MAX_SLEEP_SECONDS = 0.5
MAX_WORKERS = 256

WorkerTarget = Callable[[Settings, int, str, int], Any]
HttpTarget = Callable[[Settings, int], Any]


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
        live: bool = False,
    ) -> None:
        """``worker_target`` defaults to ``workers.process.worker_main`` and
        ``http_target`` to ``supervisor.http.app.http_main``; tests pass fakes.
        ``reload_overrides`` are re-applied on every SIGHUP reload (e.g. the CLI's
        ``--workers``, which outranks the configuration file). ``live``: show the live view
        on the terminal (``supervisor.live``; the CLI decides whether there is one)."""
        self.settings = settings
        self.config_path = config_path
        self.drain = drain
        self.with_http = with_http
        self.live = live
        self._live: LiveView | None = None
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
        self._profile_forwarded: dict[int, str] = {}
        self._rng = random.Random()
        self._metrics = Metrics(None, role="supervisor")
        self._db = SupervisorDatabase()
        self._deaths = Deaths(self._db, settings, self._metrics)
        self._publisher = Publisher(self._db, self._metrics)
        self._next_memory = 0.0
        self._next_drain_check = 0.0
        self._drain_check = DrainCheck(self.started_at)
        self._exit_message: str | None = None  # one line for the operator, printed at exit
        # SIGTERM -> handle_term, and so on (a missing handler fails here, not on the signal).
        self._handlers: dict[int, Callable[[], None]] = {
            sig: getattr(self, f"handle_{signal_name(sig)[3:].lower()}") for sig in HANDLED
        }

    # -- life -------------------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; return the process exit code."""
        self.pid = os.getpid()
        self.id = control.supervisor_id(self.hostname, self.pid)
        self.started_at = self._drain_check.started_at = datetime.now(UTC)
        reload.configure_logging(self.settings)
        register_settings_secrets(self.settings)
        # Read (and remove from the environment) before forking: workers must not inherit
        # NOTIFY_SOCKET. The notifier opens its socket on first use, after the first fork.
        self._publisher.notifier = SystemdNotifier.from_environment()
        self._resolve_targets()
        self._db.use(database_url(self.settings), embedded_home=embedded_home(self.settings))
        migrate(self._db.url)
        check_embedding_space(self._db.url, self.settings)
        if self.live:  # before the first fork: children get its terminal as their stderr
            self._live = LiveView(self._db.url, "ingestd run" + (" --drain" if self.drain else ""))
            self._live.start()
        self._publisher.forget_dead_supervisors(self.hostname)
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
            self._use_metrics(reload.make_metrics(self.settings))
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
            if self._exit_message:
                print(f"ingestd: {self._exit_message}", file=sys.stderr, flush=True)

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
            self._publisher.watchdog(now)
            if self._live is not None:
                self._live.observe(self._state, self.target, self.children.values())
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
            self._check_drain(now)

    # -- signals: each handler is what the signal means ----------------------------------

    def _dispatch(self, signum: int) -> None:
        self._log.info("signal received", signal=signal_name(signum))
        self._handlers[signum]()  # only HANDLED signals are queued

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
        self._publisher.reloading()
        try:
            prepared = reload.load(
                self.config_path, self._reload_overrides, self.settings, self._db.url
            )
        except reload.ReloadFailed as exc:
            self._log.error("reload failed; keeping the running configuration", error=str(exc))
            self._publisher.ready()
            return
        self._switch_to(prepared)

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
        self._db.close()  # a child must not inherit the supervisor's connection
        for kind, slot in due:
            self._spawn(kind, slot, now)

    def _spawn(self, kind: Kind, slot: int, now: float) -> None:
        generation = next(self._generations)
        owner = f"{self.hostname}:{self.pid}:{slot if kind is Kind.WORKER else 'http'}:{generation}"
        try:
            pid, read_fd = fork.fork_child(
                self._entry(kind, slot, owner),
                title=worker_title(slot) if kind is Kind.WORKER else http_title(),
                signals=self._signals,
                inherited_fds=[c.reader.fd for c in self.children.values() if c.channel_open],
                close=[
                    *([self._live.child_setup] if self._live is not None else []),
                    self._metrics.close,
                    self._publisher.notifier.close,
                ],
            )
        except OSError as exc:
            self._log.error("fork failed", **log_fields(kind, slot), error=str(exc))
            self._schedule_respawn(kind, slot, now, lifetime=0.0, failure=True)
            return
        child = Child.forked(
            kind, slot, pid, owner, generation, read_fd, now, self._settings_version
        )
        if kind is Kind.WORKER:
            watch.set_recycle_limits(child, self.settings, self._rng, now)
        self.children[pid] = child
        self._selector.register(read_fd, selectors.EVENT_READ)
        self._respawn_at.pop((kind, slot), None)
        self._log.info(
            "worker started" if kind is Kind.WORKER else "http child started",
            **log_fields(kind, slot),
            worker_pid=pid,
            owner=owner,
        )

    def _entry(self, kind: Kind, slot: int, owner: str) -> Callable[[int], object]:
        """The child's entry point, given its end of the channel."""
        settings, worker, http = self.settings, self._worker_target, self._http_target
        if kind is Kind.WORKER:
            assert worker is not None
            return lambda fd: worker(settings, slot, owner, fd)
        assert http is not None
        return lambda fd: http(settings, fd)

    # -- children: listen, watch ---------------------------------------------------------

    def _sleep(self) -> None:
        timeout = max(0.0, min(MAX_SLEEP_SECONDS, self._next_deadline() - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.fd == self._signals.wakeup_fd:
                self._signals.clear()

    def _next_deadline(self) -> float:
        due = [self._publisher.next_due()]
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
            # SIGINT, not SIGTERM: a worker takes TERM for a planned stop and would give
            # its documents back uncharged at its next checkpoint; INT stops it where it
            # is, and the documents it held are charged with the death (``Deaths``).
            if (detail := watch.stale_heartbeat(child, now, s)) is not None:
                self._kill(child, Reason.HEARTBEAT, signal.SIGINT, now, grace, detail)
            elif (detail := watch.past_budget(child, now, s)) is not None:
                child.kill_blame = child.budget.blame if child.budget else None
                self._kill(child, Reason.BUDGET, signal.SIGINT, now, grace, detail)
            elif (detail := watch.past_stage_deadline(child, now, s)) is not None:
                self._kill(child, Reason.DEADLINE, signal.SIGINT, now, grace, detail)

    def _check_memory(self, now: float) -> None:
        limits = self._limits
        for child in self._workers():
            if child.escalated or (uss := watch.read_memory(child)) is None:
                continue
            verdict = child.memory.observe(uss, limits)
            self._metrics.gauge(f"worker.{child.slot}.uss", uss)
            if verdict is Verdict.HARD:
                detail = (
                    f"USS {megabytes(uss)} MB over the hard ceiling "
                    f"{megabytes(limits.hard_bytes)} MB"
                )
                self._kill(child, Reason.MEMORY, signal.SIGKILL, now, 0.0, detail)
            elif verdict is Verdict.SOFT and watch.unclaimed(child):
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
            if watch.unclaimed(child) and (why := watch.recycle_due(child, now)) is not None:
                self._log.info(
                    "recycling worker", worker_slot=child.slot, worker_pid=child.pid, why=why
                )
                self._request_stop(child, Reason.RECYCLE, signal.SIGUSR2, now, grace=None)

    def _scale_down(self, now: float) -> None:
        grace = self.settings.drain_timeout_seconds
        for child in self._workers():
            if child.slot >= self.target and watch.unclaimed(child):
                self._request_stop(child, Reason.SCALE_DOWN, signal.SIGTERM, now, grace=grace)

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
        self._publisher.ready(self._view())

    def _check_drain(self, now: float) -> None:
        try:
            finished = self._drain_check.check(
                self._db.conn(), now, window=self.settings.drain_blocked_seconds
            )
        except psycopg.Error as exc:
            self._db.error("drain check", exc)
            return
        if finished is None:
            return
        (self._log.info if finished.code == EXIT_OK else self._log.error)(
            finished.why,
            services={w.service: w.documents for w in finished.services} or None,
            message=finished.message,
        )
        self._exit_message = finished.message
        self._begin_stop(finished.code, graceful=True, why=finished.why)

    # -- children: end -------------------------------------------------------------------

    def _kill(
        self, child: Child, reason: Reason, sig: int, now: float, grace: float, detail: str
    ) -> None:
        child.kill_reason, child.kill_detail = reason, detail
        self._log.error(
            "killing worker" if child.kind is Kind.WORKER else "killing http child",
            **child.log_fields,
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
            child.kill_by(now + grace)

    def _send(self, child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # exiting: the reaper will tell
            os.kill(child.pid, sig)

    def _escalate(self, now: float) -> None:
        for child in self.children.values():
            if child.kill_at is not None and not child.escalated and now >= child.kill_at:
                self._log.warning(
                    "grace period over: SIGKILL",
                    **child.log_fields,
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
            else Death(Reason.CRASH, None, None, "vanished", child.document_id)
        )
        self._deaths.record(child, death, child.lifetime(now))
        if self._stopping or death.reason is Reason.SCALE_DOWN:
            return
        if death.reason is Reason.CONFIG:
            self._log.critical(
                "a child reported a configuration error: giving up",
                kind=str(child.kind),
                **child.log_fields,
                worker_pid=child.pid,
            )
            self._begin_stop(EXIT_CONFIG, graceful=True, why="configuration error")
            return
        self._schedule_respawn(
            child.kind,
            child.slot,
            now,
            lifetime=child.lifetime(now),
            failure=death.failure,
            charged_to=death.document_id if death.charged_to_document else None,
        )

    def _schedule_respawn(
        self,
        kind: Kind,
        slot: int,
        now: float,
        *,
        lifetime: float,
        failure: bool,
        charged_to: str | None = None,
    ) -> None:
        """``charged_to``: the document the failure is blamed on (None: the daemon's)."""
        decision = self._restarts.record(
            (kind, slot),
            now=now,
            lifetime=lifetime,
            failure=failure,
            charged_to_document=charged_to is not None,
        )
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
                **log_fields(kind, slot),
                delay_seconds=decision.delay,
                streak=decision.streak,
                rapid_failures=decision.rapid_failures,
                limit=self.settings.crash_loop_limit,
                charged_to_document=charged_to,
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
        self._publisher.stopping(self._view())
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
            child.kill_by(deadline)

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
        self._deaths.abandoned(child)

    def _cleanup(self) -> None:
        self._deaths.finish()
        self._publisher.withdraw(self.id)
        self._db.close()
        control.remove_pid_file(self.settings, self.pid)
        self._signals.uninstall()
        self._publisher.notifier.close()
        self._metrics.close()
        sentry.flush()
        self._log.info(
            "supervisor exited", exit_code=self._exit_code, restarts=dict(self._deaths.restarts)
        )
        if self._live is not None:  # last: the final frame, then the summary line
            self._live.stop(self._exit_code)

    # -- reload ---------------------------------------------------------------------------

    def _switch_to(self, prepared: reload.Prepared) -> None:
        """Use a reloaded configuration (``reload`` set up what could fail), then replace
        the children one by one (``_advance_reload``)."""
        new = prepared.settings
        if prepared.metrics is not None:
            self._metrics.close()
            self._use_metrics(prepared.metrics)
        self._db.use(prepared.url, embedded_home=embedded_home(new))
        register_settings_secrets(new)
        self.settings = self._deaths.settings = new
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
        stale = reload.to_replace(self.children.values(), self.target, self._settings_version)
        if stale is None:
            return
        if not stale:
            self._reloading = False
            self._log.info("reload finished", workers=self.target)
            self._publisher.ready(self._view())
            return
        self._request_stop(
            stale[0], Reason.RELOAD, signal.SIGTERM, now, grace=self.settings.drain_timeout_seconds
        )

    # -- publishing and plumbing ----------------------------------------------------------

    def _publish(self, now: float) -> None:
        if self._publisher.due(now):
            self._deaths.retry()  # the database may be back
            self._publisher.publish(now, self._view())

    def _view(self) -> View:
        return View(
            supervisor=self.id,
            pid=self.pid,
            host=self.hostname,
            started_at=self.started_at,
            state=self._state,
            target=self.target,
            drain=self.drain,
            reloading=self._reloading,
            settings_version=self._settings_version,
            children=list(self.children.values()),
            restarts=self._deaths.restarts,
            pending_releases=self._deaths.pending,
            config_path=str(self.config_path) if self.config_path else None,
        )

    def _use_metrics(self, metrics: Metrics) -> None:
        self._metrics = self._deaths.metrics = self._publisher.metrics = metrics

    def _workers(self) -> list[Child]:
        return [c for c in self.children.values() if c.kind is Kind.WORKER]

    def _worker_in(self, slot: int) -> Child | None:
        for child in self.children.values():
            if child.kind is Kind.WORKER and child.slot == slot:
                return child
        return None

    def _update_title(self) -> None:
        state = "running" if self._state in ("running", "starting") else self._state
        set_title(supervisor_title(self.target, state))
