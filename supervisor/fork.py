"""Forking one child: its heartbeat pipe, the signal mask around ``fork``, and what the
child drops of the supervisor's before its entry point runs.

Signals are blocked across ``fork`` so the child cannot run the supervisor's handlers
before it resets them. In the child: the supervisor's signal queue is reset, the mask
restored, the read ends of every channel (its own and its siblings') closed, the
supervisor's sockets (metrics, sd_notify) closed, the kernel asked to end it with the
supervisor, and its process title set; then the entry point sets the child up
(``shared.child``). Whatever the entry point does, the child never returns into the
supervisor's loop: it leaves through ``os._exit``.
"""

from __future__ import annotations

import os
import signal
import traceback
from collections.abc import Callable, Iterable

from ingestd.shared.child import die_with_parent, leave
from ingestd.shared.exitcodes import EXIT_CRASH, EXIT_OK
from ingestd.supervisor.proctitle import set_title
from ingestd.supervisor.signals import SignalQueue, blocked


def fork_child(
    entry: Callable[[int], object],
    *,
    title: str,
    signals: SignalQueue,
    inherited_fds: Iterable[int],
    close: Iterable[Callable[[], object]],
) -> tuple[int, int]:
    """Fork a child that runs ``entry(write_fd)``; in the parent, return its pid and the
    read end of its channel. ``inherited_fds`` and ``close``: what the child must drop."""
    drop_fds, closers = list(inherited_fds), list(close)
    parent_pid = os.getpid()
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        with blocked() as mask:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                fds = [read_fd, *drop_fds]
                _become_child(entry, write_fd, title, signals, mask, fds, closers, parent_pid)
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    return pid, read_fd


def _become_child(  # pragma: no cover - runs in the child
    entry: Callable[[int], object],
    write_fd: int,
    title: str,
    signals: SignalQueue,
    mask: set[signal.Signals],
    fds: list[int],
    closers: list[Callable[[], object]],
    parent_pid: int,
) -> None:
    code = EXIT_CRASH
    try:
        signals.reset_in_child()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in fds:
            os.close(fd)
        for close in closers:
            close()
        die_with_parent(parent_pid)
        set_title(title)
        entry(write_fd)
        code = EXIT_OK  # an entry point that returns (NoReturn broken) finished normally
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = EXIT_OK  # SIGINT: the fast stop it asks for
    except BaseException:
        traceback.print_exc()
        code = EXIT_CRASH
    finally:
        leave(code)
