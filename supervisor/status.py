"""``ingestd status`` and ``ingestd show``: what the database says, for people and scripts.

``gather_status`` is also what ``GET /v1/status`` returns, so the two agree.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import psycopg

from ingestd.shared.db import reports
from ingestd.shared.db import supervisors as db_supervisors
from ingestd.supervisor.terminal import markup_safe


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


def render_status(status: dict[str, Any]) -> None:
    from rich.console import Console

    Console().print(status_renderable(status))


def status_renderable(status: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table

    docs = Table(title="documents", show_header=True)
    for name in status["documents"]:
        docs.add_column(name, justify="right")
    docs.add_row(*(str(v) for v in status["documents"].values()))
    q = status["queue"]
    tp = status["throughput"]
    summary = (
        f"runnable {q['runnable']}  leased {q['leased']}  oldest runnable "
        f"{q['oldest_runnable_age_seconds']:.1f}s  completed 1m/5m/15m "
        f"{tp['completed_last_1m']}/{tp['completed_last_5m']}/{tp['completed_last_15m']}  "
        f"tokens {q['embed_tokens']}  cost ${q['cost_usd']:.4f}"
    )
    workers = Table(title="workers")
    for col in ("supervisor", "slot", "pid", "USS MB", "document", "stage", "done", "heartbeat s"):
        workers.add_column(col)
    for w in status["workers"]:
        workers.add_row(
            markup_safe(w["supervisor"]),
            str(w["slot"]),
            str(w["pid"]),
            f"{(w['uss_bytes'] or 0) / 2**20:.0f}",
            (w["document_id"] or "-")[:8],
            w["stage"] or "-",
            str(w["documents_done"]),
            f"{w['heartbeat_age_seconds']:.1f}" if w["heartbeat_age_seconds"] is not None else "-",
        )
    return Group(docs, summary, workers)


def watch_status(conn: psycopg.Connection[Any], *, interval: float) -> int:
    from rich.live import Live

    with Live(status_renderable(gather_status(conn)), refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_renderable(gather_status(conn)))
        except KeyboardInterrupt:
            return 0


def _fmt_time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if t else "-"


def render_document(doc: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """The document's timeline: stages with start, end, duration, attempts, errors."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]{doc['id']}[/]  {markup_safe(doc['filename'])}  ({markup_safe(doc['mime_type'])},"
        f" {doc['size_bytes']} bytes)"
    )
    console.print(
        f"status [bold]{doc['status']}[/]  attempts {doc['attempts']}  "
        f"correlation {doc['correlation_id']}"
    )
    if doc["error_class"]:
        console.print(f"[red]error[/] {doc['error_class']}: {markup_safe(doc['error_message'])}")
    console.print(
        f"chunks {doc['chunks_embedded']}/{doc['chunks_total'] or 0} embedded  "
        f"tokens {doc['tokens_total']}  billed tokens {doc['embed_tokens']}  "
        f"cost ${float(doc['cost_usd']):.6f}"
    )
    table = Table(title="timeline")
    for col in ("at", "event", "stage", "from → to", "attempt", "worker", "error / details"):
        table.add_column(col)
    started: dict[str, datetime] = {}
    for ev in history:
        note = ""
        if ev["error_class"]:
            note = f"{ev['error_class']}: {ev['message'] or ''}"
        elif ev["details"]:
            note = ", ".join(f"{k}={v}" for k, v in ev["details"].items())
        if ev["event"] in ("claimed", "stage_started") and ev["to_status"]:
            started[str(ev["to_status"])] = ev["at"]
        if ev["event"] == "stage_finished" and ev["stage"] in started:
            took = (ev["at"] - started.pop(ev["stage"])).total_seconds()
            note = f"took {took:.3f}s" + (f"; {note}" if note else "")
        arrow = f"{ev['from_status'] or ''} → {ev['to_status'] or ''}".strip()
        table.add_row(
            _fmt_time(ev["at"]),
            ev["event"],
            ev["stage"] or "",
            arrow,
            str(ev["attempt"] if ev["attempt"] is not None else ""),
            markup_safe(ev["worker"] or ""),
            markup_safe(note),
        )
    console.print(table)
