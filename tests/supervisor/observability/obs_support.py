"""Stand-ins for the outside world the daemon reports to, and a real ``ingestd run`` to drive.

- ``StatsdSink``: a UDP socket on a loopback port, collecting every statsd line.
- ``SentryIngest``: an HTTP server standing in for Sentry's envelope endpoint.
- ``Daemon``: ``python -m supervisor.cli run`` in its own process group, its stderr (JSON
  log lines of the supervisor and every child) in a file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests import polling

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 60.0  # safety net only: every wait returns as soon as its condition holds

# Small timeouts so a run takes seconds; the values a test exercises are set by the test.
FAST_ENV: dict[str, str] = {
    "INGESTD_LOG_JSON": "true",
    "INGESTD_LOG_LEVEL": "INFO",
    "INGESTD_HTTP_PORT": "0",  # any free port: nobody calls it unless a test picks one
    "INGESTD_HEARTBEAT_TIMEOUT_SECONDS": "20",
    "INGESTD_DRAIN_TIMEOUT_SECONDS": "20",
    "INGESTD_MEMORY_CHECK_SECONDS": "0.1",
    "INGESTD_POLL_SECONDS": "0.5",
    "INGESTD_RETRY_BASE_SECONDS": "0.01",
    "INGESTD_RETRY_MAX_SECONDS": "0.05",
    "INGESTD_RESTART_BACKOFF_BASE_SECONDS": "0.05",
    "INGESTD_RESTART_BACKOFF_MAX_SECONDS": "0.2",
}


def wait_until(
    check: Callable[[], Any],
    what: str,
    timeout: float = TIMEOUT,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """``tests.polling.wait_until`` with this module's safety-net timeout."""
    return polling.wait_until(check, what, timeout, on_timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- statsd ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str  # without the prefix
    value: str
    type: str  # c, g, ms (statsd wire types)
    line: str


class StatsdSink:
    """Every statsd line received on a loopback UDP port (pipelines split into lines)."""

    def __init__(self, prefix: str = "ingestd") -> None:
        self.prefix = prefix
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.lines.extend(line for line in data.decode().split("\n") if line)

    def samples(self) -> list[Sample]:
        with self._lock:
            lines = list(self.lines)
        out = []
        for line in lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            kind = kind.split("|")[0]  # drop a sample rate
            if name.startswith(self.prefix + "."):
                name = name[len(self.prefix) + 1 :]
            out.append(Sample(name, value, kind, line))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


# -- Sentry ----------------------------------------------------------------------------------


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """A header line, then per item a header line and a payload (``length`` bytes when
    the item header gives one, else up to the next newline)."""
    pos = body.index(b"\n") + 1
    items: list[tuple[dict[str, Any], Any]] = []
    while pos < len(body):
        end = body.find(b"\n", pos)
        if end == pos:  # a trailing newline
            break
        header = json.loads(body[pos : end if end != -1 else None])
        pos = end + 1 if end != -1 else len(body)
        length = header.get("length")
        if length is None:
            end = body.find(b"\n", pos)
            end = len(body) if end == -1 else end
            payload, pos = body[pos:end], end + 1
        else:
            payload, pos = body[pos : pos + length], pos + length + 1
        try:
            items.append((header, json.loads(payload)))
        except ValueError:
            items.append((header, payload))
    return items


@dataclass
class Envelope:
    path: str
    raw: bytes  # the body as sent, decompressed
    items: list[tuple[dict[str, Any], Any]]

    def events(self) -> list[dict[str, Any]]:
        return [p for h, p in self.items if h.get("type") == "event" and isinstance(p, dict)]


class SentryIngest:
    """Sentry's ingest endpoint for project 1: records every envelope POSTed to it."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        lock = self._lock = threading.Lock()
        envelopes = self.envelopes

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding not in (None, "identity"):
                    raise AssertionError(f"unexpected Content-Encoding {encoding}")
                with lock:
                    envelopes.append(Envelope(self.path, body, parse_envelope(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.dsn = f"http://public@127.0.0.1:{self.port}/1"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def received(self) -> list[Envelope]:
        with self._lock:
            return list(self.envelopes)

    def events(self) -> list[dict[str, Any]]:
        return [e for env in self.received() for e in env.events()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the daemon ------------------------------------------------------------------------------


class Daemon:
    """A real ``ingestd`` process (``run`` and its children), output in ``log_path``."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, env: dict[str, str]) -> None:
        self.proc = proc
        self.log_path = log_path
        self.env = env

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines (anything else, e.g. a traceback printed raw, is skipped
        here; ``text()`` still has it)."""
        out = []
        for line in self.text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ingestd still running\n{self.tail()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def spawn(args: Sequence[str], env: dict[str, str], log_path: Path) -> Daemon:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ingestd.supervisor.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown can kill it all
        )
    return Daemon(proc, log_path, env)


def cli_json(env: dict[str, str], *args: str) -> Any:
    """Run a one-shot ``ingestd`` command that prints JSON; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return json.loads(done.stdout)
