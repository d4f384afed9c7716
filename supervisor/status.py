"""``ingestd status`` and ``ingestd show``: what the database says, for people and scripts.

``gather_status`` is also what ``GET /v1/status`` returns, so the two agree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table

from ingestd.shared.db import reports
from ingestd.shared.db import supervisors as db_supervisors
from ingestd.supervisor.terminal import Col, FittedTable, OutputConsole, SideBySide, markup_safe


def gather_status(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    workers = db_supervisors.all_workers(conn)
    for w in workers:
        w["document_id"] = str(w["document_id"]) if w["document_id"] else None
        for key in ("heartbeat_age_seconds", "uptime_seconds"):
            w[key] = round(float(w[key]), 3) if w[key] is not None else None
    supervisors = db_supervisors.all_supervisors(conn)
    minutes = (1, 5, 15)
    return {
        "documents": reports.counts_by_status(conn),
        "queue": reports.queue_summary(conn),
        "throughput": {
            f"completed_last_{m}m": reports.completed_since(conn, m * 60) for m in minutes
        },
        "workers": workers,
        "supervisors": supervisors,
        "breakers": {s["supervisor"]: s["details"].get("breakers", {}) for s in supervisors},
    }


def render_status(
    status: dict[str, Any], *, wide: bool = False, console: Console | None = None
) -> None:
    _print(console or OutputConsole(), status_renderable(status, wide=wide), wide=wide)


def status_renderable(status: dict[str, Any], *, wide: bool = False) -> RenderableType:
    """Documents by status beside the queue, then supervisors and workers: fitted to the
    console's width, or every column at full width when ``wide``."""
    return Group(
        SideBySide(_documents_table(status["documents"]), _queue_table(status)),
        FittedTable(
            "supervisors",
            _supervisor_columns(status),
            wide=wide,
            empty="none has published its status (is `ingestd run` running?)",
        ),
        FittedTable(
            "workers",
            _worker_columns(status["workers"], wide=wide),
            wide=wide,
            empty="none running",
        ),
    )


def _documents_table(counts: dict[str, int]) -> Table:
    # One row per status: twelve statuses as columns cannot fit 80 columns uncut.
    table = Table(title="documents", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("status", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    for name, n in counts.items():
        table.add_row(name, str(n))
    table.add_section()
    table.add_row("total", str(sum(counts.values())), style="bold")
    return table


def _queue_table(status: dict[str, Any]) -> Table:
    q = status["queue"]
    tp = status["throughput"]
    table = Table(title="queue", box=box.SIMPLE_HEAD, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    table.add_row("runnable", str(q["runnable"]))
    table.add_row("leased", str(q["leased"]))
    table.add_row("oldest runnable", f"{q['oldest_runnable_age_seconds']:.1f}s")
    table.add_row(
        "completed 1m/5m/15m",
        f"{tp['completed_last_1m']}/{tp['completed_last_5m']}/{tp['completed_last_15m']}",
    )
    table.add_row("billed tokens", str(q["embed_tokens"]))
    table.add_row("cost", f"${q['cost_usd']:.4f}")
    return table


def _supervisor_columns(status: dict[str, Any]) -> list[Col]:
    sups = status["supervisors"]
    details = [s["details"] or {} for s in sups]
    breakers = status["breakers"]
    return [
        Col("supervisor", [markup_safe(s["supervisor"]) for s in sups], keep=9),
        Col("state", [markup_safe(s["state"]) for s in sups], keep=8),
        Col(
            "workers",
            [f"{d.get('workers_alive', '-')}/{d.get('workers_target', '-')}" for d in details],
            keep=6,
            justify="right",
        ),
        Col(
            "breakers",
            [_breakers(breakers.get(s["supervisor"], {})) for s in sups],
            keep=10,
            wrap=True,
        ),
        Col("host", [markup_safe(s["hostname"]) for s in sups], keep=3),
        Col("pid", [str(s["pid"]) for s in sups], keep=2, justify="right"),
        Col("started", [_fmt_datetime(s["started_at"]) for s in sups], keep=1),
    ]


def _breakers(states: dict[str, str]) -> str:
    opened = {k: v for k, v in states.items() if v != "closed"}
    if not opened:
        return "all closed" if states else "-"
    return ", ".join(f"{markup_safe(k)} {markup_safe(v)}" for k, v in opened.items())


def _worker_columns(workers: list[dict[str, Any]], *, wide: bool) -> list[Col]:
    def age(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    doc_len = None if wide else 8  # the prefix `ingestd show` accepts
    return [
        Col("slot", [str(w["slot"]) for w in workers], keep=9, justify="right"),
        Col("stage", [markup_safe(w["stage"] or "-") for w in workers], keep=8),
        Col("document", [(w["document_id"] or "-")[:doc_len] for w in workers], keep=7),
        Col(
            "heartbeat s",
            [age(w["heartbeat_age_seconds"]) for w in workers],
            keep=6,
            justify="right",
        ),
        Col("done", [str(w["documents_done"]) for w in workers], keep=5, justify="right"),
        Col("supervisor", [markup_safe(w["supervisor"]) for w in workers], keep=4),
        Col(
            "USS MB",
            [f"{(w['uss_bytes'] or 0) / 2**20:.0f}" for w in workers],
            keep=3,
            justify="right",
        ),
        Col("pid", [str(w["pid"]) for w in workers], keep=2, justify="right"),
        Col("uptime s", [age(w["uptime_seconds"]) for w in workers], keep=1, justify="right"),
        Col("owner", [markup_safe(w["owner"] or "-") for w in workers], keep=0),
    ]


def watch_status(conn: psycopg.Connection[Any], *, interval: float, wide: bool = False) -> int:
    """Redraw until Ctrl-C (exit 0) or SIGTERM/SIGHUP (exit 128 + signal, a closed
    terminal included). The signals only set a flag the loop reads between redraws: an
    exception raised from a handler lands wherever the main thread happens to be (in a
    query, in rich's drawing), and the exit must not depend on where that is."""
    import signal
    import threading

    from rich.live import Live

    stopped = threading.Event()
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with Live(status_renderable(gather_status(conn), wide=wide), refresh_per_second=4) as live:
            try:
                while not stopped.wait(interval):
                    live.update(status_renderable(gather_status(conn), wide=wide))
            except KeyboardInterrupt:
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 + received[0]


def _fmt_datetime(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def render_document(
    doc: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    wide: bool = False,
    console: Console | None = None,
) -> None:
    """The document's timeline: stages with start, end, duration, attempts, errors."""
    console = console or OutputConsole()
    console.print(
        f"[bold]{doc['id']}[/]  {markup_safe(doc['filename'])}  ({markup_safe(doc['mime_type'])},"
        f" {doc['size_bytes']} bytes)"
    )
    console.print(
        f"status [bold]{doc['status']}[/]  attempts {doc['attempts']}  "
        f"correlation {doc['correlation_id']}"
    )
    if doc["error_class"]:
        console.print(
            f"[red]error[/] {markup_safe(doc['error_class'])}: {markup_safe(doc['error_message'])}"
        )
    console.print(
        f"chunks {doc['chunks_embedded']}/{doc['chunks_total'] or 0} embedded  "
        f"tokens {doc['tokens_total']}  billed tokens {doc['embed_tokens']}  "
        f"cost ${float(doc['cost_usd']):.6f}"
    )
    _print(console, timeline_renderable(history, wide=wide), wide=wide)


def timeline_renderable(history: list[dict[str, Any]], *, wide: bool = False) -> RenderableType:
    """One row per event. Times are shown as time of day; the date once in the title and
    again in the first row of each later day."""
    title = "timeline"
    if history:
        first = history[0]["at"]
        zone = first.tzname()
        title = f"timeline {first:%Y-%m-%d}" + (f" ({zone})" if zone else "")
    at, event, stage, arrow, attempt, worker, note = ([] for _ in range(7))  # type: list[str]
    started: dict[str, datetime] = {}
    day = history[0]["at"].date() if history else None
    for ev in history:
        text = ""
        if ev["error_class"]:
            text = f"{ev['error_class']}: {ev['message'] or ''}"
        elif ev["details"]:
            text = ", ".join(f"{k}={v}" for k, v in ev["details"].items())
        if ev["event"] in ("claimed", "stage_started") and ev["to_status"]:
            started[str(ev["to_status"])] = ev["at"]
        if ev["event"] == "stage_finished" and ev["stage"] in started:
            took = (ev["at"] - started.pop(ev["stage"])).total_seconds()
            text = f"took {took:.3f}s" + (f"; {text}" if text else "")
        when = f"{ev['at']:%H:%M:%S}.{ev['at'].microsecond // 1000:03d}"
        if ev["at"].date() != day:
            day = ev["at"].date()
            when = f"{day:%Y-%m-%d}\n{when}"
        at.append(when)
        event.append(markup_safe(ev["event"]))
        stage.append(markup_safe(ev["stage"] or ""))
        arrow.append(markup_safe(f"{ev['from_status'] or ''} → {ev['to_status'] or ''}".strip()))
        attempt.append(str(ev["attempt"] if ev["attempt"] is not None else ""))
        worker.append(markup_safe(ev["worker"] or ""))
        note.append(markup_safe(text))
    columns = [
        Col("at", at, keep=9),
        Col("event", event, keep=8),
        Col("from → to", arrow, keep=7),
        Col("try", attempt, keep=4, justify="right"),
        Col("worker", worker, keep=3),
        Col("stage", stage, keep=2),
        Col("error / details", note, keep=10, wrap=True),
    ]
    return FittedTable(title, columns, wide=wide, empty="no events")


def _print(console: Console, renderable: RenderableType, *, wide: bool) -> None:
    # Wide lines are longer than the terminal on purpose: uncropped, for `less -S` or a file.
    console.print(renderable, crop=not wide)
