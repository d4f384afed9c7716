"""Where a benchmark's CPU went: core-seconds per part of the system over a window.

On a shared 2-core VM the wall-clock figure of one run can be 20 % off the next
for the host's sake alone, and it hides which part paid. The CPU that each part
spent per unit of work (the workers, PostgreSQL, the API emulator) is steadier,
sums up to what bounds the throughput on a busy machine, and shows at once which
part a change made cheaper or dearer.

Processes that exit inside the window are still counted: workers through the
benchmark's own ``RUSAGE_CHILDREN`` (it reaps them), PostgreSQL backends through
the postmaster's children times (it reaps them), so a connection that closes
before the end loses nothing.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg
from psycopg.rows import tuple_row

_TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[float, float]:
    """(busy, idle) core-seconds of the whole machine since boot; steal is neither."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / _TICK, (idle + iowait) / _TICK


def _own(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _with_reaped(p: psutil.Process) -> float:
    """A process's CPU plus that of the children it has reaped."""
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _reaped_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    """The one value ``query`` returns, whatever row factory ``conn`` has."""
    row = conn.cursor(row_factory=tuple_row).execute(query).fetchone()
    assert row is not None
    return row[0]


def postmaster_of(conn: psycopg.Connection[Any]) -> psutil.Process | None:
    """The local postmaster behind ``conn``, or None when the server is not on this
    machine (or not visible to this user): a backend's parent is its postmaster."""
    pid = _scalar(conn, "SELECT pg_backend_pid()")
    try:
        backend = psutil.Process(pid)
        parent = backend.parent()
        if parent is None or "postgres" not in parent.name() or "postgres" not in backend.name():
            return None
        return parent
    except psutil.Error:
        return None


def _server(postmaster: psutil.Process) -> float:
    """Everything the server spent: the postmaster, its reaped children (backends
    gone), and its live ones (backends, WAL writer, checkpointer, ...).

    A backend reaped while its siblings are being read would be counted in neither
    place (or in both): read again until the reaped total stays the same around
    the reading of the live ones."""
    while True:
        before = _with_reaped(postmaster)
        live, complete = 0.0, True
        for child in postmaster.children():
            try:
                live += _own(child)
            except psutil.NoSuchProcess:
                complete = False  # reaped under us: read everything again
        if complete and _with_reaped(postmaster) == before:
            return before + live


@dataclass(frozen=True)
class Snapshot:
    machine_busy: float
    machine_idle: float
    workers: float
    postgres: float | None
    emulator: float | None


class CpuMeter:
    """Core-seconds spent between ``start()`` and ``stop()``, by part.

    ``workers`` are the caller's child processes that it has reaped by ``stop()``
    (join them first); ``postmaster`` and ``emulator`` are optional.
    """

    def __init__(
        self, postmaster: psutil.Process | None = None, emulator: psutil.Process | None = None
    ) -> None:
        self.postmaster = postmaster
        self.emulator = emulator
        self._start: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        busy, idle = _machine()
        return Snapshot(
            machine_busy=busy,
            machine_idle=idle,
            workers=_reaped_children(),
            postgres=_server(self.postmaster) if self.postmaster is not None else None,
            emulator=_own(self.emulator) if self.emulator is not None else None,
        )

    def start(self) -> None:
        self._start = self.snapshot()

    def stop(self) -> dict[str, float | None]:
        """Core-seconds by part, and how busy the machine's cores were."""
        assert self._start is not None, "start() first"
        a, b = self._start, self.snapshot()

        def delta(get: Callable[[Snapshot], float | None]) -> float | None:
            x, y = get(a), get(b)
            return None if x is None or y is None else y - x

        busy = b.machine_busy - a.machine_busy
        idle = b.machine_idle - a.machine_idle
        parts = {
            "workers": delta(lambda s: s.workers),
            "postgres": delta(lambda s: s.postgres),
            "emulator": delta(lambda s: s.emulator),
        }
        known = sum(v for v in parts.values() if v is not None)
        return {
            **parts,
            # The benchmark itself, the kernel's threads, anything else on the machine.
            "other": max(busy - known, 0.0),
            "all": busy,
            "busy_percent": 100 * busy / (busy + idle) if busy + idle > 0 else 0.0,
        }


def per_unit(seconds: dict[str, float | None], units: int) -> dict[str, float | None]:
    """Microseconds of CPU per unit of work (a chunk), by part."""
    return {
        k: (None if v is None else round(v / units * 1e6, 1))
        for k, v in seconds.items()
        if k != "busy_percent"
    }


def wait_for_backends_to_leave(
    conn: psycopg.Connection[Any], timeout: float = 10.0, poll: float = 0.05
) -> bool:
    """Wait until ``conn`` is the database's only client connection: a worker's
    backend ends a moment after the worker, and its CPU is only counted once the
    postmaster has reaped it. False if others are still there at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        others = _scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND datname = current_database()",
        )
        if not others:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
