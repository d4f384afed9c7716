"""Slow and greedy clients over real sockets: deadlines, connection caps, per-token rate and
size. Deadlines are made small where a test waits for one, and large where a test needs
connections to stay open; outcomes are asserted, never timings."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.http.limits import GUARD, ConnectionGuard, RateLimiter
from ingestd.supervisor.tokens import Scope, issue
from tests.emulators import running
from tests.supervisor.http.http_harness import (
    ADMIN_TOKEN,
    AppServer,
    multipart,
    request,
    snapshot,
    wait_for,
    zeros,
)

SAFETY = 60.0  # socket timeouts: a safety net, never what a test waits for


@contextlib.contextmanager
def _server(make_settings, db_url, **settings: Any) -> Iterator[AppServer]:
    with running(AppServer(make_settings(**settings), db_url)) as app:
        yield app


def _port(app: AppServer) -> int:
    return int(app.url.rsplit(":", 1)[1])


def _open_connections(app: AppServer) -> int:
    assert app.app is not None
    return app.app[GUARD].open_connections()


def _slow_upload(app: AppServer, size: int = 1 << 20) -> socket.socket:
    """An upload that declares ``size`` bytes, sends its headers and a few bytes of the
    file, and then stalls."""
    boundary = "slow-" + uuid.uuid4().hex
    prefix = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="s.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    head = (
        "POST /v1/documents HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(prefix) + size + len(tail)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY)
    sock.sendall(head + prefix + b"sixteen bytes..\n")
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (b"" when it closed without a word)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def _status_line(raw: bytes) -> bytes:
    return raw.split(b"\r\n", 1)[0]


def test_a_stalled_upload_gets_408_and_frees_its_slot(make_settings, db_url, db) -> None:
    with _server(
        make_settings,
        db_url,
        http_header_timeout_seconds=0.5,
        http_body_floor_seconds=0.5,
        http_body_min_rate_kib=16,
    ) as app:
        before = snapshot(db)
        # One more than the upload slots: the fifth waits for a slot while it stalls too.
        socks = [_slow_upload(app) for _ in range(5)]
        answers = [_answer(s) for s in socks]
        for s in socks:
            s.close()
        for raw in answers:
            # 408 when its handler read again; closed when it never did in time.
            assert raw == b"" or _status_line(raw).endswith(b" 408 Request Timeout"), raw[:200]
        assert any(raw for raw in answers), "the uploads holding slots are answered"
        timed_out = next(raw for raw in answers if raw)
        assert b"slower than 16 KiB/s" in timed_out
        assert b"connection: close" in timed_out.lower()
        assert snapshot(db) == before  # nothing half-stored
        # The slots are free again.
        body, headers = multipart(b"a normal upload after the slow ones", "ok.txt")
        assert request("POST", app.url + "/v1/documents", data=body, headers=headers).status == 201


def test_health_answers_while_many_uploads_stream(make_settings, db_url, db) -> None:
    with _server(
        make_settings,
        db_url,
        http_header_timeout_seconds=SAFETY,
        http_body_floor_seconds=SAFETY,
        http_max_connections_per_ip=64,
    ) as app:
        socks = [_slow_upload(app) for _ in range(40)]
        try:
            wait_for(lambda: _open_connections(app) == 40, what="40 open uploads")
            for _ in range(3):
                assert request("GET", app.url + "/healthz", token=None).status == 200
            assert request("GET", app.url + "/v1/status").status == 200
            assert _open_connections(app) >= 40  # none of them was dropped to answer
        finally:
            for s in socks:
                s.close()
        wait_for(lambda: _open_connections(app) == 0, what="the uploads to be gone")
        body, headers = multipart(b"after the crowd", "ok.txt")
        assert request("POST", app.url + "/v1/documents", data=body, headers=headers).status == 201


def test_half_sent_headers_and_idle_connections_are_closed(make_settings, db_url, db) -> None:
    with _server(make_settings, db_url, http_header_timeout_seconds=0.5) as app:
        half = socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY)
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")  # never the blank line
        silent = socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY)
        # A keep-alive connection, idle after its answer.
        idle = socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        first = idle.recv(65536)
        assert _status_line(first).endswith(b" 200 OK")
        with half, silent, idle:
            assert _answer(half) == b""
            assert _answer(silent) == b""
            assert _answer(idle) == b""
        wait_for(lambda: _open_connections(app) == 0, what="the guard to forget them")


def test_connections_over_the_per_address_cap_are_refused(make_settings, db_url, db) -> None:
    with _server(
        make_settings, db_url, http_header_timeout_seconds=SAFETY, http_max_connections_per_ip=3
    ) as app:
        held = [socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY) for _ in "abc"]
        try:
            wait_for(lambda: _open_connections(app) == 3, what="three open connections")
            with socket.create_connection(("127.0.0.1", _port(app)), timeout=SAFETY) as extra:
                with contextlib.suppress(OSError):  # reset, or closed before it is written
                    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                assert _answer(extra) == b""
            assert _open_connections(app) == 3
            held.pop().close()
            wait_for(lambda: _open_connections(app) == 2, what="one connection to close")
            assert request("GET", app.url + "/healthz", token=None).status == 200
        finally:
            for s in held:
                s.close()


def test_each_token_has_its_own_request_rate(make_settings, db_url, db) -> None:
    with _server(make_settings, db_url, api_rate_per_second=0.01, api_rate_burst=3) as app:
        status = app.url + "/v1/status"
        assert [request("GET", status).status for _ in range(3)] == [200] * 3
        refused = request("GET", status)
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["retry_after"] == int(refused.headers["Retry-After"])
        other = issue(db, "other", Scope.READ).token
        assert request("GET", status, token=other).status == 200
        assert request("GET", app.url + "/healthz", token=None).status == 200  # probes: no token


def test_a_token_with_its_own_upload_cap(server, db) -> None:
    small = issue(db, "small-uploads", Scope.WRITE, max_upload_mb=1).token
    url = server.url + "/v1/documents"
    before = snapshot(db)
    big, big_headers = multipart(b"z" * (2 << 20), "big.txt")
    declared = request("POST", url, data=big, headers=big_headers, token=small)
    assert declared.status == 413 and "1 MiB" in declared.json()["detail"]
    # Streamed without a length: cut once the count passes the token's cap.
    head, headers = multipart(b"", "big.bin")
    boundary = headers["Content-Type"].split("boundary=")[1]
    prefix = head[: head.index(b"\r\n\r\n", head.index(b'name="file"')) + 4]
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def chunked():
        yield prefix
        async for piece in zeros(2 << 20)():
            yield piece
        yield tail

    streamed = request("POST", url, data=chunked, headers=headers, token=small)
    assert streamed.status == 413, streamed.body
    assert snapshot(db) == before
    # The server's own cap (512 MiB) applies to the admin token.
    assert request("POST", url, data=big, headers=big_headers).status == 201


# -- the rules, without sockets ---------------------------------------------------------------


@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_the_bucket_never_lets_more_through_than_burst_plus_rate(rate, burst, gaps) -> None:
    limiter = RateLimiter(rate, burst)
    now, accepted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = limiter.take("t", now)
        if wait == 0:
            accepted += 1
        else:
            assert 0 < wait <= 1 / rate + 1e-9
            # Asking again after the wait it named succeeds.
            assert copy.deepcopy(limiter).take("t", now + wait + 1e-9) == 0
        assert accepted <= burst + rate * now + 1e-6
    assert limiter.take("another key", now) == 0  # keys do not share a bucket


@dataclass(eq=False)
class _Transport:
    reading: bool = True
    closed: bool = False
    aborted: bool = False

    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.7", 5555) if name == "peername" else None

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


@dataclass
class _Body:
    error: BaseException | None = None

    def is_eof(self) -> bool:
        return False

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc


@dataclass
class _Request:
    content: _Body = field(default_factory=_Body)
    transport: Any = None


def test_time_the_server_is_not_reading_is_not_held_against_the_client(make_settings) -> None:
    settings = make_settings(http_body_floor_seconds=10, http_body_min_rate_kib=1)
    guard = ConnectionGuard(settings, Metrics(None, role="http"))
    transport = _Transport()

    async def admit() -> Any:  # the guard starts its sweeper on the running loop
        conn = guard.admit(transport, "api")  # type: ignore[arg-type]
        await guard.stop()
        return conn

    conn = asyncio.run(admit())
    request = _Request(transport=transport)
    guard.begin(request)  # type: ignore[arg-type]
    conn.last_sweep = 0.0
    # 100 s with the server's buffer full (reading paused): not the client's fault.
    transport.reading = False
    for t in range(1, 101):
        guard.sweep(float(t))
    assert request.content.error is None
    # Reading again, and the client sends nothing: cut once past the 10 s floor.
    transport.reading = True
    for t in range(101, 111):
        guard.sweep(float(t))
    assert request.content.error is None
    guard.sweep(112.0)
    assert request.content.error is not None
    assert "slower than 1 KiB/s" in str(request.content.error)
    # The handler never reads again: the connection goes after a header timeout.
    guard.sweep(112.0 + settings.http_header_timeout_seconds + 1)
    assert transport.aborted and guard.open_connections() == 0
