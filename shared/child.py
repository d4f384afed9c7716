"""A supervised child's life after fork, the same for a worker and the HTTP child.

``run_child`` sets up afresh what a child must not inherit (logging, Sentry, metrics,
malloc tuning where the role wants it), registers the configuration's secrets, makes
SIGHUP reopen the log files, opens the heartbeat channel, runs the role's body, and
leaves through ``os._exit`` with an exit code from ``shared.exitcodes``: the body's
(0 after a graceful stop), 78 for a configuration error, 70 for anything unexpected
(logged and sent to Sentry first). ``os._exit``: the child shares the parent's
atexit handlers and buffered files, which are the parent's to run and flush.

It lives in ``shared`` because both children use it and neither may import the
other's layer (``supervisor.http`` must not import ``workers``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.errors import ConfigError
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH
from ingestd.shared.malloc import tune_malloc
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry import sentry
from ingestd.shared.telemetry.logs import configure_logging, get_logger, reopen_log_files
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.telemetry.scrub import register_settings_secrets

SENTRY_FLUSH_SECONDS = 2.0


@dataclass(frozen=True)
class Role:
    """Which child this is: ``name`` is its logging, Sentry and metrics role."""

    name: str
    slot: int | None = None
    # Workers churn through large buffers (``shared.malloc``); the HTTP child does not.
    tune_malloc: bool = False

    @property
    def label(self) -> str:
        return self.name if self.slot is None else f"{self.name} {self.slot}"

    @property
    def logger(self) -> str:
        return f"ingestd.{self.name}"

    @property
    def crashed(self) -> str:
        return "worker crashed" if self.name == "worker" else f"{self.name} child crashed"


@dataclass(frozen=True)
class Started:
    """What the body of a child gets from the start-up."""

    settings: Settings
    metrics: Metrics
    channel: WorkerChannel


def run_child(
    role: Role, settings: Settings, channel_fd: int | None, body: Callable[[Started], int]
) -> NoReturn:
    """Set up, run ``body``, exit with its code (or the failure's). Never returns."""
    code = EXIT_CRASH
    try:
        code = _start_and_run(role, settings, channel_fd, body)
    except ConfigError as exc:
        print(f"ingestd {role.label}: configuration error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except BaseException:
        get_logger(role.logger).exception(role.crashed)
        code = EXIT_CRASH
    finally:
        sentry.flush(SENTRY_FLUSH_SECONDS)
    leave(code)


def _start_and_run(
    role: Role, settings: Settings, channel_fd: int | None, body: Callable[[Started], int]
) -> int:
    if role.tune_malloc:
        tune_malloc()
    configure_logging(
        role.name,
        role.slot,
        json=settings.log_json,
        level=settings.log_level,
        log_file=settings.log_file,
    )
    register_settings_secrets(settings)
    sentry.init_sentry(settings.sentry_dsn, settings.sentry_environment, role.name, role.slot)
    metrics = Metrics.from_settings(
        settings.statsd_host,
        settings.statsd_port,
        settings.statsd_prefix,
        role=role.name,
        slot=role.slot,
    )
    # The supervisor forwards SIGUSR1 (its own log reopening) to its children as SIGHUP.
    signal.signal(signal.SIGHUP, lambda *_: reopen_log_files())
    try:
        return body(Started(settings, metrics, WorkerChannel(channel_fd)))
    finally:
        metrics.close()


def leave(code: int) -> NoReturn:
    """Exit a forked child at once, after flushing what it printed itself."""
    # A closed stdout has nowhere left to report to, and nothing (not even a signal's
    # KeyboardInterrupt) may send a forked child back into its parent's code from here.
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the child
    """Ask the kernel to SIGTERM this child if the supervisor dies (even by SIGKILL), so a
    worker never runs on unsupervised: it drains and exits like on a normal shutdown.
    ``parent_pid`` is read before the fork: a parent that died in between is noticed."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
        os._exit(0)
