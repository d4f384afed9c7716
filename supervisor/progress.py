"""``ingestd ingest --wait``: block until every document is terminal."""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.db import reports, supervisors
from ingestd.shared.states import TERMINAL

# A worker that published no heartbeat for this long is not counted as running.
_LIVE_WITHIN_SECONDS = 30.0


def wait_for_documents(
    conn: psycopg.Connection[Any],
    ids: list[UUID],
    *,
    show_progress: bool,
    emit_json: bool,
    interval: float = 0.5,
) -> bool:
    """Return True when every document completed, False if any failed or died."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return True
    warned = False
    progress: Any = None
    task: Any = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        progress.start()
        task = progress.add_task("ingesting", total=len(ids))
    try:
        while True:
            rows = reports.statuses(conn, ids)
            done = [r for r in rows.values() if r["status"] in TERMINAL]
            if progress is not None:
                progress.update(task, completed=len(done))
            if len(done) == len(ids):
                break
            if (
                not warned
                and supervisors.workers_alive(conn, within_seconds=_LIVE_WITHIN_SECONDS) == 0
            ):
                print(
                    "waiting: no ingestd workers are running (start `ingestd run`)", file=sys.stderr
                )
                warned = True
            time.sleep(interval)
    finally:
        if progress is not None:
            progress.stop()
    bad = [r for r in rows.values() if r["status"] != "complete"]
    for r in bad:
        line = {
            "document_id": str(r["id"]),
            "status": str(r["status"]),
            "error_class": r["error_class"],
            "error": r["error_message"],
        }
        if emit_json:
            print(json.dumps(line))
        else:
            print(
                f"{r['status']}: {r['id']} [{r['error_class']}] {r['error_message']}",
                file=sys.stderr,
            )
    return not bad
