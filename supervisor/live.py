"""``ingestd run`` on a terminal: a live panel under the scrolling log.

The panel shows documents by status, chunks/s and tokens/s over the last
``RATE_WINDOW_SECONDS``, the cost of this run, an ETA for what is left, each worker
(slot, pid, stage, document, USS) and the latest failures. Log lines keep scrolling
above it: the supervisor's through ``logs.redirect_console``, the children's through a
pseudo-terminal whose output this module relays (a child writing straight to the
terminal would scribble over the panel; a pseudo-terminal rather than a pipe, so a
child still sees a terminal and logs exactly as it would without the view).

Where the work happens, and why: the supervisor's loop only hands over what it already
knows (``observe``: a tuple per worker, no I/O). Two daemon threads do the rest: one
queries the database (at most once per ``QUERY_SECONDS``, one bounded statement under a
statement timeout) and redraws; one relays the children's lines. Rendering and the
query can therefore never delay a heartbeat check or a reap, even when the database is
slow or the terminal stalls. What a thread must not leave to a forked child is dropped
in ``child_setup``.

A failure of the view (terminal gone, a rendering error) never stops the daemon: the
view turns itself off, logs one warning, and lines go to stderr as they would without
it. Off a terminal, with JSON logs or ``--no-live``, none of this exists.

The pure half (``RateWindow``, ``eta_seconds``, ``render``, ``summary_line``) turns a
``Snapshot`` into text; ``LiveView`` is the driver.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ingestd.shared.db import reports
from ingestd.shared.db.connect import connect
from ingestd.shared.errors import named_first_line
from ingestd.shared.states import ACTIVE, TERMINAL, Status
from ingestd.shared.telemetry.logs import get_logger, redirect_console
from ingestd.supervisor.children import Child, Kind
from ingestd.supervisor.terminal import printable

RATE_WINDOW_SECONDS = 20.0
MIN_RATE_SPAN_SECONDS = 1.0  # a rate over less than this is noise, not a figure
QUERY_SECONDS = 1.0
QUERY_TIMEOUT_SECONDS = 2.0
REFRESH_SECONDS = 0.5
FAILURES_SHOWN = 5
SHORT_ID = 8
STOP_JOIN_SECONDS = 5.0
RELAY_READ_BYTES = 65536
# A child line longer than this (no newline yet) is relayed in pieces.
MAX_PENDING_BYTES = 65536

_log = get_logger("ingestd.supervisor.live")


# -- deciding -------------------------------------------------------------------------------


def wanted(*, no_live: bool, log_json: bool | None, stream: IO[str]) -> bool:
    """The live view is for people: on a terminal that can move its cursor, with the
    console log format, unless ``--no-live``. Everywhere else, the JSON lines of today."""
    if no_live or log_json is True:
        return False
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return False
    return not Console(file=stream).is_dumb_terminal


# -- what is shown --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRow:
    slot: int
    pid: int
    stage: str | None
    document_id: str | None
    uss_bytes: int | None


@dataclass(frozen=True)
class Failure:
    document_id: str
    filename: str | None
    error_class: str | None
    reason: str | None


@dataclass(frozen=True)
class Totals:
    """One reading of the database."""

    counts: dict[str, int]
    runnable: int
    chunks: int
    tokens: int
    cost_usd: float
    failures: tuple[Failure, ...] = ()

    @property
    def finished(self) -> int:
        return sum(self.counts.get(str(s), 0) for s in TERMINAL)

    @property
    def remaining(self) -> int:
        """Runnable now, or in a worker's hands: what the ETA is for."""
        return self.runnable + sum(self.counts.get(str(s), 0) for s in ACTIVE)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Totals:
        failures = tuple(
            Failure(
                document_id=str(f["id"]),
                filename=f.get("filename"),
                error_class=f.get("error_class"),
                reason=f.get("error_message"),
            )
            for f in row["failures"]
        )
        return cls(
            counts=dict(row["counts"]),
            runnable=row["runnable"],
            chunks=row["chunks"],
            tokens=row["tokens"],
            cost_usd=row["cost_usd"],
            failures=failures,
        )


@dataclass(frozen=True)
class Rates:
    chunks_per_second: float | None = None
    tokens_per_second: float | None = None
    documents_per_second: float | None = None


class RateWindow:
    """Rates from the totals read over the last ``window`` seconds."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, int, int, int]] = deque()

    def add(self, at: float, totals: Totals) -> None:
        sample = (at, totals.chunks, totals.tokens, totals.finished)
        if self._samples and any(
            new < old for new, old in zip(sample[1:], self._samples[-1][1:], strict=True)
        ):
            # A total went down (documents deleted, or requeued for re-embedding): a rate
            # across that step would be wrong, so the window starts again.
            self._samples.clear()
        self._samples.append(sample)
        while len(self._samples) > 2 and self._samples[1][0] <= at - self.window:
            self._samples.popleft()

    def rates(self) -> Rates:
        if len(self._samples) < 2:
            return Rates()
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span < MIN_RATE_SPAN_SECONDS:
            return Rates()
        chunks, tokens, docs = ((b - a) / span for a, b in zip(first[1:], last[1:], strict=True))
        return Rates(chunks, tokens, docs)


def eta_seconds(remaining: int, per_second: float | None) -> float | None:
    """Seconds until ``remaining`` documents are done at ``per_second``; None when that
    cannot be said (no rate yet, or nothing finishing)."""
    if remaining <= 0:
        return 0.0
    if per_second is None or per_second <= 0:
        return None
    return remaining / per_second


@dataclass(frozen=True)
class Snapshot:
    title: str
    state: str
    target: int
    uptime_seconds: float
    workers: tuple[WorkerRow, ...] = ()
    totals: Totals | None = None
    baseline: Totals | None = None  # the first reading: "this run" is counted from it
    rates: Rates = field(default_factory=Rates)
    database_error: str | None = None


def short_id(document_id: str | None) -> str:
    return "-" if not document_id else document_id[:SHORT_ID]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _megabytes(n: int | None) -> str:
    return "-" if n is None else f"{n / (1024 * 1024):.0f} MB"


def _pairs(*items: tuple[str, str]) -> Text:
    text = Text()
    for i, (label, value) in enumerate(items):
        if i:
            text.append("  ")
        text.append(f"{label} ", style="dim")
        text.append(value, style="bold")
    return text


def _run_figures(snap: Snapshot) -> tuple[int, int, float]:
    """Documents finished, chunks embedded and dollars spent since the first reading."""
    now, base = snap.totals, snap.baseline or snap.totals
    if now is None or base is None:
        return 0, 0, 0.0
    return (
        max(0, now.finished - base.finished),
        max(0, now.chunks - base.chunks),
        max(0.0, now.cost_usd - base.cost_usd),
    )


def _documents_line(totals: Totals | None) -> Text:
    if totals is None:
        return Text("documents: waiting for the first reading", style="dim")
    shown = [(str(s), totals.counts.get(str(s), 0)) for s in Status]
    text = Text("documents ", style="dim")
    for i, (name, n) in enumerate((name, n) for name, n in shown if n):
        if i:
            text.append("  ")
        style = "red" if name in ("failed", "dead") else "green" if name == "complete" else ""
        text.append(f"{name} ")
        text.append(str(n), style=f"bold {style}".strip())
    if not any(n for _, n in shown):
        text.append("none")
    return text


def _workers_table(workers: tuple[WorkerRow, ...]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left")
    table.add_column("slot", justify="right", no_wrap=True)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("stage", no_wrap=True, overflow="ellipsis", max_width=12)
    table.add_column("document", no_wrap=True)
    table.add_column("USS", justify="right", no_wrap=True)
    for w in sorted(workers, key=lambda w: w.slot):
        table.add_row(
            str(w.slot),
            str(w.pid),
            Text(printable(w.stage or "idle")),
            short_id(w.document_id),
            _megabytes(w.uss_bytes),
        )
    return table


def _failures_table(failures: tuple[Failure, ...]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=True)
    table.add_column("failed", no_wrap=True)
    table.add_column("file", no_wrap=True, overflow="ellipsis", max_width=20)
    # The longest error class (``lease_expired``) fits whole.
    table.add_column("class", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", ratio=1, min_width=12)
    for f in failures:
        table.add_row(
            short_id(f.document_id),
            Text(printable(f.filename or "-")),
            Text(printable(f.error_class or "-"), style="red"),
            Text(printable(f.reason or "-")),
        )
    return table


def render(snap: Snapshot) -> RenderableType:
    """The panel for ``snap``; fits any width down to about 60 columns without cutting a
    figure (names and reasons are shortened with an ellipsis)."""
    totals = snap.totals
    finished, chunks, cost = _run_figures(snap)
    rates = snap.rates
    eta = eta_seconds(totals.remaining, rates.documents_per_second) if totals else None
    parts: list[RenderableType] = [
        _pairs(
            ("state", snap.state),
            ("workers", f"{len(snap.workers)}/{snap.target}"),
            ("up", duration(snap.uptime_seconds)),
        ),
        _documents_line(totals),
        _pairs(
            ("chunks/s", _rate(rates.chunks_per_second)),
            ("tokens/s", _rate(rates.tokens_per_second)),
            ("docs/s", _rate(rates.documents_per_second)),
        ),
        _pairs(
            ("left", "-" if totals is None else str(totals.remaining)),
            ("ETA", duration(eta)),
            ("cost", f"${cost:.4f}"),
            ("this run", f"{finished} docs, {chunks} chunks"),
        ),
    ]
    if snap.database_error:
        parts.append(Text(f"database: {printable(snap.database_error)}", style="yellow"))
    if snap.workers:
        parts.append(_workers_table(snap.workers))
    if totals is not None and totals.failures:
        parts.append(_failures_table(totals.failures))
    return Panel(Group(*parts), title=snap.title, title_align="left", box=box.ROUNDED)


def summary_line(snap: Snapshot, exit_code: int) -> str:
    """The line left under the final frame: what this run did (under 80 columns for
    any run of fewer than a million documents)."""
    _, chunks, cost = _run_figures(snap)
    now, base = snap.totals, snap.baseline or snap.totals
    done = {str(s): 0 for s in (Status.COMPLETE, Status.FAILED, Status.DEAD)}
    if now is not None and base is not None:
        for name in done:
            done[name] = max(0, now.counts.get(name, 0) - base.counts.get(name, 0))
    outcome = ", ".join(f"{n} {name}" for name, n in done.items() if n) or "nothing finished"
    return (
        f"{snap.state} after {duration(snap.uptime_seconds)}: {outcome}; "
        f"{chunks} chunks; ${cost:.4f}; exit {exit_code}"
    )


def worker_rows(children: Iterable[Child]) -> tuple[WorkerRow, ...]:
    return tuple(
        WorkerRow(c.slot, c.pid, c.stage, c.document_id, c.memory.last_uss)
        for c in children
        if c.kind is Kind.WORKER
    )


# -- the driver -----------------------------------------------------------------------------


class _Lines(io.TextIOBase):
    """A text stream that hands each complete line to ``emit`` (the supervisor's log
    handler writes here while the view is on)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, s: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + s).split("\n")
        for line in lines:
            self._emit(line)
        return len(s)

    def isatty(self) -> bool:
        return True  # the lines end on a terminal: the console format, in colour


def _as_shown(raw: bytes) -> str:
    """A child's line as a terminal would have left it: after the last carriage return
    (progress bars redraw themselves with one)."""
    line = raw.decode("utf-8", "replace").rstrip("\r")
    return line.rsplit("\r", 1)[-1]


class LiveView:
    """Start with ``start()`` before the first fork; the loop calls ``observe``; each
    forked child runs ``child_setup``; ``stop`` at exit leaves the last frame and a
    summary line."""

    def __init__(
        self,
        url: str,
        title: str,
        *,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.title = title
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started_at = clock()
        self._since = datetime.now(UTC)
        self.console = Console(file=self._stream)
        self._live: Live | None = None
        self._on = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._workers: tuple[WorkerRow, ...] = ()
        self._state = "starting"
        self._target = 0
        self._rates = RateWindow()
        self._baseline: Totals | None = None
        self._totals: Totals | None = None
        self._database_error: str | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._master = self._slave = -1
        self._threads: list[threading.Thread] = []
        self._pending = b""  # a child's line the relay has begun, not yet ended
        self.lost_lines = 0

    # -- the loop's side: no I/O ----------------------------------------------------------

    def observe(self, state: str, target: int, children: Iterable[Child]) -> None:
        self._state, self._target = state, target
        self._workers = worker_rows(children)

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self._master, self._slave = os.openpty()
        os.set_inheritable(self._master, False)
        os.set_inheritable(self._slave, False)
        tty.setraw(self._slave)  # no echo, no \n -> \r\n: the children only write
        self._live = Live(
            self._renderable(),
            console=self.console,
            auto_refresh=False,  # our view thread refreshes; no third thread
            redirect_stdout=False,
            redirect_stderr=False,  # children must not inherit a proxy for sys.stderr
            transient=False,
        )
        self._live.start(refresh=True)
        self._on = True
        redirect_console(_Lines(self._emit))
        for name, target in (("live-view", self._view_loop), ("live-relay", self._relay_loop)):
            thread = threading.Thread(target=target, name=f"ingestd-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def child_setup(self) -> None:  # pragma: no cover - runs in a forked child
        """In a forked child: its stderr becomes the relayed pseudo-terminal, and nothing of
        the view's (threads' locks, the database socket) is used or kept."""
        os.dup2(self._slave, 2)
        os.close(self._slave)
        os.close(self._master)
        # A fresh object: the parent's may have been locked by a thread at the fork.
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        redirect_console(None)  # until the child configures its own logging
        if self._conn is not None:
            # Only the child's copy of the socket: the parent's connection stays up.
            with contextlib.suppress(OSError, psycopg.Error):
                os.close(self._conn.pgconn.socket)

    def stop(self, exit_code: int) -> None:
        """Last reading and frame, then the summary line; the relay drains first."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(STOP_JOIN_SECONDS)
            if thread.is_alive():
                _log.warning("live view thread did not stop in time", thread=thread.name)
        self._relay_available()
        self._tick(final=True)
        if self._on and self._live is not None:
            try:
                self._live.stop()
            except Exception as exc:
                self._turn_off(exc)
        redirect_console(None)
        line = summary_line(self._snapshot(), exit_code)
        self._write_raw(line)
        if self.lost_lines:
            _log.warning("log lines lost: the terminal refused them", lines=self.lost_lines)
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1
        if self._conn is not None:
            self._conn.close()

    # -- threads ---------------------------------------------------------------------------

    def _view_loop(self) -> None:
        next_query = 0.0
        try:
            while not self._stopping.is_set():
                now = self._clock()
                if now >= next_query:
                    next_query = now + QUERY_SECONDS
                    self._read_database(now)
                self._tick()
                self._stopping.wait(REFRESH_SECONDS)
        except Exception as exc:  # whatever it is, the view goes and the daemon stays
            self._turn_off(exc)

    def _relay_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                ready, _, _ = select.select([self._master], [], [], REFRESH_SECONDS)
                if ready:
                    data = os.read(self._master, RELAY_READ_BYTES)
                    self._pending = self._relay_chunk(self._pending, data)
        except Exception as exc:
            # Children writing to a terminal nobody reads would block once it is full; the
            # heartbeat checks would then recycle them. Said loudly, once.
            _log.error("live view: relaying the children's output failed", error=repr(exc))
            self._turn_off(exc)

    def _relay_chunk(self, pending: bytes, data: bytes) -> bytes:
        *lines, pending = (pending + data).split(b"\n")
        for raw in lines:
            self._emit_ansi(_as_shown(raw))
        if len(pending) > MAX_PENDING_BYTES:
            self._emit_ansi(_as_shown(pending))
            pending = b""
        return pending

    def _relay_available(self) -> None:
        """What the children wrote and the relay thread has not read yet (at stop)."""
        pending = self._pending
        if self._master >= 0:
            while select.select([self._master], [], [], 0)[0]:
                try:
                    data = os.read(self._master, RELAY_READ_BYTES)
                except OSError:
                    break
                if not data:
                    break
                pending = self._relay_chunk(pending, data)
        if pending:
            self._emit_ansi(_as_shown(pending))
        self._pending = b""

    # -- the database ----------------------------------------------------------------------

    def _read_database(self, now: float) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.url, autocommit=True, application_name="ingestd-live")
                reports.limit_statement_time(self._conn, QUERY_TIMEOUT_SECONDS)
            row = reports.live_summary(
                self._conn, failed_since=self._since, failures=FAILURES_SHOWN
            )
        except psycopg.Error as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            error = named_first_line(exc)
            if self._database_error is None:
                _log.warning("live view: cannot read the database", error=error)
            self._database_error = error
            return
        if self._database_error is not None:
            _log.info("live view: database readable again")
        self._database_error = None
        totals = Totals.from_row(row)
        with self._lock:
            self._totals = totals
            if self._baseline is None:
                self._baseline = totals
            self._rates.add(now, totals)

    # -- drawing ------------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                title=self.title,
                state=self._state,
                target=self._target,
                uptime_seconds=self._clock() - self._started_at,
                workers=self._workers,
                totals=self._totals,
                baseline=self._baseline,
                rates=self._rates.rates(),
                database_error=self._database_error,
            )

    def _renderable(self) -> RenderableType:
        return render(self._snapshot())

    def _tick(self, *, final: bool = False) -> None:
        if final:
            self._read_database(self._clock())
            self._state = "stopped"
        if not self._on or self._live is None:
            return
        try:
            self._live.update(self._renderable(), refresh=True)
        except Exception as exc:
            self._turn_off(exc)

    def _turn_off(self, exc: BaseException) -> None:
        """The view failed: lines go straight to stderr from now on; the daemon goes on."""
        if not self._on:
            return
        self._on = False
        redirect_console(None)
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):  # already failing; the warning says why
                live.stop()
        _log.warning("live view turned off", error=f"{type(exc).__name__}: {exc}")

    # -- lines --------------------------------------------------------------------------------

    def _emit(self, line: str) -> None:
        self._emit_ansi(line)

    def _emit_ansi(self, line: str) -> None:
        if self._on:
            try:
                self.console.print(Text.from_ansi(line), soft_wrap=True)
                return
            except Exception as exc:
                self._turn_off(exc)
        self._write_raw(line)

    def _write_raw(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            self.lost_lines += 1  # reported by ``stop``: the terminal is gone
