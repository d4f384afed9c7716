"""Driving a real supervisor running in a subprocess: start it, read its log, poll the
database it publishes to, signal it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests import polling

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "arbiter_harness.py"
TIMEOUT = 20.0  # safety net only: every wait below returns as soon as its condition holds

# Small timeouts so each test takes seconds; each test overrides what it exercises.
FAST = {
    "workers": 1,
    "heartbeat_timeout_seconds": 5.0,
    "drain_timeout_seconds": 5.0,
    "memory_check_seconds": 0.05,
    "restart_backoff_base_seconds": 0.05,
    "restart_backoff_max_seconds": 0.4,
    "crash_loop_limit": 50,
    "crash_loop_window_seconds": 30.0,
    "lease_seconds": 60.0,
    "retry_base_seconds": 0.01,
    "retry_max_seconds": 0.05,
    "log_level": "DEBUG",
    "log_json": True,
}


def wait_until(
    check: Callable[[], Any],
    what: str,
    timeout: float = TIMEOUT,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """``tests.polling.wait_until`` with this module's safety-net timeout."""
    return polling.wait_until(check, what, timeout, on_timeout)


class ArbiterRun:
    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, conn: psycopg.Connection[Any]
    ) -> None:
        self.proc = proc
        self.log_path = log_path
        self.conn = conn

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def supervisor(self) -> str:
        return f"{socket.gethostname()}:{self.pid}"

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def events(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return found  # a log file moved away and not reopened yet
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a traceback printed by a crashing fake
            if not isinstance(record, dict) or record.get("role") != "supervisor":
                continue
            if event is not None and record.get("event") != event:
                continue
            if all(record.get(k) == v for k, v in fields.items()):
                found.append(record)
        return found

    def wait_event(
        self, event: str, count: int = 1, timeout: float = TIMEOUT, **fields: Any
    ) -> list[dict[str, Any]]:
        return wait_until(
            lambda: found if len(found := self.events(event, **fields)) >= count else None,
            f"{count} x {event!r} {fields}",
            timeout,
            self.log_tail,
        )

    def workers(self) -> list[dict[str, Any]]:
        return self.conn.execute(
            "SELECT slot, pid, owner, document_id, stage, documents_done, uss_bytes,"
            " heartbeat_at FROM worker_status WHERE supervisor = %s ORDER BY slot",
            (self.supervisor,),
        ).fetchall()

    def wait_workers(
        self, check: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = TIMEOUT
    ) -> list[dict[str, Any]]:
        return wait_until(
            lambda: w if check(w := self.workers()) else None, what, timeout, self.log_tail
        )

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor still running\n{self.log_tail()}") from None
