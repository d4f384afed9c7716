"""Signals become queue entries; the main loop acts on them.

A handler does two things only: append the signal number to a queue and write a
byte to a self-pipe, so that the loop, asleep in ``poll``, wakes at once (PEP 475
would otherwise resume the interrupted ``poll`` with its old timeout). Acting from
the loop means no handler ever runs in the middle of a half-done bookkeeping step.
SIGCHLD only wakes the loop: it reaps every known child on each pass anyway.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# What each signal asks the supervisor to do (see Arbiter.handle_*).
HANDLED: tuple[signal.Signals, ...] = (
    signal.SIGTERM,  # graceful drain, exit 0
    signal.SIGINT,  # fast stop
    signal.SIGQUIT,  # fast stop
    signal.SIGHUP,  # reload the configuration, replace workers one by one
    signal.SIGTTIN,  # one more worker
    signal.SIGTTOU,  # one worker fewer
    signal.SIGUSR1,  # reopen log files
    signal.SIGUSR2,  # forward pending profile requests to their workers
)
WAKE_ONLY: tuple[signal.Signals, ...] = (signal.SIGCHLD,)
ALL: tuple[signal.Signals, ...] = HANDLED + WAKE_ONLY

# Signals arriving while this many wait unhandled are dropped (the newest, so a TERM that
# came first is never lost behind a storm of TTINs).
QUEUE_LIMIT = 64

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalQueue:
    def __init__(self) -> None:
        self._queue: deque[int] = deque()
        self._read_fd = -1
        self._write_fd = -1
        self._previous: dict[int, Handler] = {}

    @property
    def wakeup_fd(self) -> int:
        """Readable whenever a signal arrived (or ``wake`` was called) since the last ``clear``."""
        return self._read_fd

    def install(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._enqueue)
        for sig in WAKE_ONLY:
            self._previous[sig] = signal.signal(sig, self._wake_handler)

    def _enqueue(self, signum: int, _frame: FrameType | None) -> None:
        if len(self._queue) < QUEUE_LIMIT:
            self._queue.append(signum)
        self.wake()

    def _wake_handler(self, _signum: int, _frame: FrameType | None) -> None:
        self.wake()

    def wake(self) -> None:
        if self._write_fd < 0:
            return
        # A full pipe already guarantees a wake-up; the byte is only a doorbell.
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(self._write_fd, b"\0")

    def clear(self) -> None:
        """Empty the self-pipe (the loop calls this after it woke)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._read_fd, 4096):
                pass

    def pop(self) -> int | None:
        try:
            return self._queue.popleft()
        except IndexError:
            return None

    def __iter__(self) -> Iterator[int]:
        """Drain the queue in arrival order (signals arriving meanwhile are included)."""
        while (signum := self.pop()) is not None:
            yield signum

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self._close()

    def reset_in_child(self) -> None:
        """In a freshly forked child: default dispositions, and the parent's pipe closed.

        The child must not enqueue into its copy of the queue, nor ring the parent's
        doorbell. SIGINT gets Python's default (KeyboardInterrupt) rather than SIG_DFL.
        """
        for sig in ALL:
            signal.signal(
                sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            )
        self._previous.clear()
        self._queue.clear()
        self._close()

    def _close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1


@contextlib.contextmanager
def blocked(signals: tuple[signal.Signals, ...] = ALL) -> Iterator[set[signal.Signals]]:
    """Block ``signals`` for the duration (around ``fork``: a signal must not run the
    parent's handler in the child before the child resets its dispositions).
    Yields the previous mask so the child can restore it itself."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield previous
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
