"""One scenario's world: its own database (with a password in its URL, which must never
be logged), its own INGESTD_HOME, secrets configured, and real ``ingestd`` processes
started in their own process groups with their log lines captured to files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from ingestd.shared.db.connect import connect
from tests import polling

ROOT = Path(__file__).resolve().parents[2]
# Safety nets only: every wait returns as soon as its condition holds.
RUN_TIMEOUT = 150.0
API_KEY = "sk-chaos-api-key-5c1e7a9d0b3f"
WEBHOOK_SECRET = "whsec-chaos-4d2b8e6f1a9c"
DB_PASSWORD = "chaos-db-password-7f3a"

# Small timeouts: each scenario overrides what it exercises.
FAST_ENV = {
    "INGESTD_EMBEDDER": "hash",
    "INGESTD_WORKERS": "2",
    "INGESTD_HTTP_PORT": "0",
    "INGESTD_LOG_JSON": "true",
    "INGESTD_LOG_LEVEL": "INFO",
    "INGESTD_RETRY_BASE_SECONDS": "0.01",
    "INGESTD_RETRY_MAX_SECONDS": "0.05",
    "INGESTD_RESTART_BACKOFF_BASE_SECONDS": "0.05",
    "INGESTD_RESTART_BACKOFF_MAX_SECONDS": "0.4",
    "INGESTD_CRASH_LOOP_LIMIT": "100",
    "INGESTD_DRAIN_TIMEOUT_SECONDS": "10",
    "INGESTD_MEMORY_CHECK_SECONDS": "0.1",
}


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (by their process title)."""
        found = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                if " worker " in " ".join(child.cmdline()) and child.status() != "zombie":
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def http_child(self) -> psutil.Process | None:
        for child in psutil.Process(self.pid).children():
            try:
                if child.cmdline()[:1] and "ingestd: http" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        return None

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ingestd run still running\n{self.tail()}") from None

    def kill_group(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait()


@dataclass
class Scene:
    name: str
    dir: Path
    db_url: str  # carries DB_PASSWORD
    env: dict[str, str]
    daemons: list[Daemon] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    # What the test itself holds (an embedded server it joined), let go of before the
    # check for processes left behind.
    releases: list[Callable[[], None]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["INGESTD_HOME"])

    def conn(self) -> psycopg.Connection[dict[str, Any]]:
        return connect(self.db_url, autocommit=True, application_name="chaos-test")

    def cli(
        self, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A one-shot ``ingestd`` command; its output is kept for the secret check."""
        done = subprocess.run(
            [sys.executable, "-m", "ingestd.supervisor.cli", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        log = self.dir / f"cli-{len(self.logs)}.log"
        log.write_text(done.stdout + done.stderr)
        self.logs.append(log)
        return done

    def start(self, *args: str, drain: bool = True, env: dict[str, str] | None = None) -> Daemon:
        log = self.dir / f"run-{len(self.daemons)}.log"
        argv = [sys.executable, "-m", "ingestd.supervisor.cli", "run", "--no-live"]
        argv += ["--drain"] if drain else []
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, *args],
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon = Daemon(proc, log)
        self.daemons.append(daemon)
        self.logs.append(log)
        return daemon

    def counts(self) -> dict[str, int]:
        with self.conn() as c:
            rows = c.execute("SELECT status::text, count(*) AS n FROM documents GROUP BY 1")
            return {r["status"]: int(r["n"]) for r in rows}

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.kill_group()


def wait_until(
    check: Callable[[], Any], what: str, timeout: float = RUN_TIMEOUT, tail: Daemon | None = None
) -> Any:
    return polling.wait_until(check, what, timeout, tail.tail if tail else None)


def timed(check: Callable[[], Any], what: str, timeout: float = RUN_TIMEOUT) -> float:
    """Seconds until ``check`` holds."""
    start = time.monotonic()
    polling.wait_until(check, what, timeout)
    return time.monotonic() - start


def iter_lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        if path.exists():
            yield from path.read_text(errors="replace").splitlines()
