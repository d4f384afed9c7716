"""The README's tables of ``status --json`` and ``show --json`` fields match real output, both
ways: every field printed is documented and every field documented is printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from ingestd.shared.db import supervisors as db_supervisors
from ingestd.shared.ingest import IngestResult
from ingestd.shared.states import Status

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### `--json` fields of `status` and `show`"
# Objects keyed by data, not by a fixed name: documented with a placeholder.
PLACEHOLDERS = {
    "documents": "<status>",
    "breakers": "<supervisor>",
    "breakers.<supervisor>": "<service>",
}
# Free-form objects, documented as a whole.
OPAQUE = {"supervisors[].details", "events[].details"}


def _documented() -> tuple[set[str], set[str]]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ")]
    status_part, show_part = section.split("`ingestd show ID --json`", 1)

    def fields(part: str) -> set[str]:
        return set(re.findall(r"^\| `([^`]+)` \|", part, flags=re.MULTILINE))

    return fields(status_part), fields(show_part)


def _printed(obj: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in obj.items():
        path = prefix + PLACEHOLDERS.get(prefix.rstrip("."), key)
        if path in OPAQUE or not isinstance(value, dict | list):
            out.add(path)
        elif isinstance(value, dict):
            out |= _printed(value, path + ".")
        else:
            for item in value:
                out |= _printed(item, path + "[].")
    return out


def _ingestd_json(cli_env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args, "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_readme_describes_every_json_field_and_only_those(
    conn: psycopg.Connection[Any],
    cli_env: dict[str, str],
    ingest_bytes: Callable[..., IngestResult],
) -> None:
    doc = ingest_bytes(b"hello, fields", name="fields.txt")
    now = datetime.now(UTC)
    db_supervisors.publish(
        conn,
        supervisor="host-a:42",
        pid=42,
        host="host-a",
        started_at=now,
        state="running",
        details={"workers_alive": 1, "workers_target": 1, "breakers": {"openai": "open"}},
        workers=[
            {
                "slot": 0,
                "pid": 43,
                "owner": "host-a:42:0:1",
                "started_at": now,
                "heartbeat_age": 0.5,
                "uss_bytes": 2**20,
                "document_id": str(doc.document_id),
                "stage": "parsing",
                "documents_done": 3,
            }
        ],
    )
    status = _ingestd_json(cli_env, "status")
    show = _ingestd_json(cli_env, "show", str(doc.document_id))
    assert status["workers"] and status["supervisors"] and show["events"]  # lists not empty
    assert set(status["documents"]) == {str(s) for s in Status}

    documented_status, documented_show = _documented()
    assert _printed(status) == documented_status
    assert _printed(show) == documented_show
