"""The benchmark's CPU accounting counts processes that exit inside the window:
worker processes the benchmark reaps, and PostgreSQL backends whose connection
closed before the end."""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from typing import Any

import psutil
import psycopg
import pytest

from profiling.cpu import (
    CpuMeter,
    _server,
    per_unit,
    postmaster_of,
    wait_for_backends_to_leave,
)

# CPU time is read in clock ticks (10 ms) in places: allow a couple of them.
_TICKS = 0.03


def _burn(spent: Any) -> None:
    total = 0
    for i in range(3_000_000):
        total += i
    spent.value = time.process_time()


def test_a_reaped_child_process_is_counted_as_a_worker() -> None:
    spent = mp.get_context("fork").Value("d", 0.0)
    meter = CpuMeter()
    meter.start()
    child = mp.get_context("fork").Process(target=_burn, args=(spent,))
    child.start()
    child.join()
    seconds = meter.stop()
    assert spent.value > 0
    assert seconds["workers"] is not None
    assert seconds["workers"] >= spent.value - _TICKS
    assert seconds["postgres"] is None and seconds["emulator"] is None
    assert seconds["all"] is not None and seconds["all"] >= seconds["workers"] - _TICKS


def _backend_cpu(conn: psycopg.Connection[Any]) -> float:
    """The CPU the connection's backend has spent so far."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _backend_burn(conn: psycopg.Connection[Any]) -> float:
    """Make the connection's backend work; the CPU it has spent so far."""
    conn.execute("SELECT count(*) FROM generate_series(1, 2000000)").fetchone()
    return _backend_cpu(conn)


def test_backends_are_counted_whether_their_connection_closed_or_not(
    fresh_db_url: Callable[..., str],
) -> None:
    url = fresh_db_url()
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url) as kept:
        postmaster = postmaster_of(conn)
        if postmaster is None:
            pytest.skip("the test server is not on this machine: its processes can't be read")
        kept_before = _backend_cpu(kept)
        meter = CpuMeter(postmaster)
        meter.start()
        with psycopg.connect(url) as closed:
            closed_cpu = _backend_burn(closed)
        kept_cpu = _backend_burn(kept)
        assert not wait_for_backends_to_leave(conn, timeout=0)  # ``kept`` is still there
        seconds = meter.stop()
    assert closed_cpu > 0 and kept_cpu > 0
    assert seconds["postgres"] is not None
    assert seconds["postgres"] >= closed_cpu + (kept_cpu - kept_before) - 2 * _TICKS


def _burn_on_signal(go: Any, done: Any, before: Any, spent: Any) -> None:
    go.wait(30)
    before.value = time.process_time()
    _burn(spent)
    done.set()
    go.wait(30)  # stays alive (not reaped) until the meter has read it


def test_a_live_process_is_counted_as_the_emulator() -> None:
    ctx = mp.get_context("fork")
    go, done = ctx.Event(), ctx.Event()
    before, spent = ctx.Value("d", 0.0), ctx.Value("d", 0.0)
    child = ctx.Process(target=_burn_on_signal, args=(go, done, before, spent))
    child.start()
    try:
        meter = CpuMeter(emulator=psutil.Process(child.pid))
        meter.start()
        go.set()
        assert done.wait(30)
        seconds = meter.stop()
    finally:
        go.set()
        child.join()
    work = spent.value - before.value
    assert work > 0
    assert seconds["emulator"] is not None
    assert work - _TICKS <= seconds["emulator"] <= spent.value + _TICKS
    # Not reaped when stop() read it: not counted as a worker as well.
    assert seconds["workers"] is not None and seconds["workers"] < _TICKS


def test_per_unit_gives_microseconds_per_chunk_by_part() -> None:
    seconds = {"workers": 2.0, "postgres": 1.0, "emulator": None, "busy_percent": 90.0}
    assert per_unit(seconds, 10_000) == {"workers": 200.0, "postgres": 100.0, "emulator": None}


class _Times:
    def __init__(self, own: float, reaped: float = 0.0) -> None:
        self.user, self.system = own, 0.0
        self.children_user, self.children_system = reaped, 0.0


class _Child:
    def __init__(self, cpu: float) -> None:
        self.cpu = cpu

    def cpu_times(self) -> _Times:
        return _Times(self.cpu)


class _Postmaster:
    """A server whose one backend (3 s of CPU) is reaped while the first listing of
    its children is being read: listed, but gone from the live ones by then."""

    def __init__(self) -> None:
        self.reaped = 1.0
        self.listings = 0

    def cpu_times(self) -> _Times:
        return _Times(0.5, self.reaped)

    def children(self) -> list[_Child]:
        self.listings += 1
        if self.listings == 1:
            self.reaped += 3.0  # the backend's CPU moves to the postmaster's children times
        return [_Child(2.0)]  # the checkpointer, alive throughout


def test_a_backend_reaped_during_the_reading_is_counted_once() -> None:
    postmaster = _Postmaster()
    assert _server(postmaster) == 0.5 + 4.0 + 2.0  # type: ignore[arg-type]
    assert postmaster.listings == 2


class _Vanished:
    def cpu_times(self) -> _Times:
        raise psutil.NoSuchProcess(4242)


class _QuietPostmaster(_Postmaster):
    """A backend that used less CPU than the clock counts exits while the first listing
    is read: the reaped total does not move, and the siblings listed after it count."""

    def children(self) -> list[Any]:  # type: ignore[override]
        self.listings += 1
        if self.listings == 1:
            return [_Vanished(), _Child(2.0)]
        return [_Child(2.0)]


def test_a_backend_gone_without_a_trace_does_not_hide_its_siblings() -> None:
    postmaster = _QuietPostmaster()
    assert _server(postmaster) == 0.5 + 1.0 + 2.0  # type: ignore[arg-type]
    assert postmaster.listings == 2
