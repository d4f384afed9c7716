"""``http_main`` as the supervisor runs it: a forked child that serves, heartbeats over its
channel pipe, and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

from ingestd.shared.channel import ChannelReader
from ingestd.shared.exitcodes import EXIT_CRASH, EXIT_OK
from tests.supervisor.http.http_harness import SECRET, request, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_messages(reader: ChannelReader, fd: int, want: str, within: float = 20.0) -> list:
    deadline = time.monotonic() + within
    seen: list = []
    while time.monotonic() < deadline:
        select.select([fd], [], [], 0.2)
        msgs, eof = reader.read()
        seen.extend(msgs)
        if want == "beat" and msgs:
            return seen
        if want in {m.get("event") for m in msgs} or (want == "eof" and eof):
            return seen
        if eof:
            break
    raise AssertionError(f"no {want!r} from the http child; got {seen[-3:]}")


def test_child_serves_heartbeats_and_stops_on_sigterm(make_settings, db) -> None:
    port = _free_port()
    settings = make_settings(http_port=port, webhook_secret=SECRET, log_json=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            from ingestd.supervisor.http.app import http_main

            http_main(settings, write_fd)
        finally:
            os._exit(EXIT_CRASH)
    os.close(write_fd)
    reader = ChannelReader(read_fd)
    try:
        _read_messages(reader, read_fd, "beat")
        url = f"http://127.0.0.1:{port}"
        reply = wait_for(lambda: _try(url + "/healthz"), what="the child to accept connections")
        assert reply.status == 200 and reply.json() == {"status": "ok"}
        assert request("GET", url + "/readyz").status == 503  # no workers in this test
        os.kill(pid, signal.SIGTERM)
        msgs = _read_messages(reader, read_fd, "stopping")
        assert any(m.get("event") == "stopping" for m in msgs)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == EXIT_OK
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(read_fd)


def _try(url: str):
    try:
        return request("GET", url, timeout=2)
    except OSError:
        return None
