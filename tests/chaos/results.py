"""Where scenarios put their figures (one JSON object per line), for ``tests.chaos.report``.

``INGESTD_CHAOS_RESULTS`` names the file; by default it is under the system's temporary
directory. The controlling pytest process empties it at the start of a session."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def path() -> Path:
    configured = os.environ.get("INGESTD_CHAOS_RESULTS")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "ingestd-chaos.jsonl"


def reset() -> None:
    path().write_text("")


def record(table: str, row: dict[str, Any]) -> None:
    """Append one row (xdist workers append to the same file: under a lock)."""
    with path().open("a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        f.write(json.dumps({"table": table, **row}, default=str) + "\n")
        fcntl.lockf(f, fcntl.LOCK_UN)
    print(f"\n[chaos] {table}: {row}")


def load() -> list[dict[str, Any]]:
    if not path().exists():
        return []
    return [json.loads(line) for line in path().read_text().splitlines() if line.strip()]
