"""Limits that keep one client from holding the HTTP server: connection caps, request
deadlines, and a request rate per API token.

**Connections.** ``GuardedSite`` listens like ``web.TCPSite`` but wraps each connection's
protocol, so the guard sees every connection from accept to close, including those that
never finish a request line (which no middleware sees):

- a client address holds at most ``http_max_connections_per_ip`` connections, and all
  clients together ``http_max_connections`` (kept under the open-file limit, so the
  health probes still get a socket); a connection over a cap is closed at once;
- a connection that is not in a request (fresh, or idle after an answer) must send a
  request's complete headers within ``http_header_timeout_seconds``, else it is closed;
  this also ends idle keep-alive connections;
- a request body must arrive within ``http_body_floor_seconds + size / http_body_min_rate_kib``
  (checked as it streams: past the floor, a body behind that schedule is cut off), else
  the body's reader raises ``RequestDeadline``, which answers 408 and closes. Seconds in
  which the server had paused reading (its buffer full while the upload waited for a
  slot or for the database) are not held against the client. A handler that does not
  read for another header timeout after that loses its connection.

Defaults: headers within 10 s; bodies at 16 KiB/s after a 10 s floor (a 1 MiB body has
74 s, a 512 MiB one 9 h); 64 connections per address, 512 in all.

**Requests per token.** A token bucket per token id (``api_rate_per_second``, burst
``api_rate_burst``), in this process: each host of a scaled-out deployment counts alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.http.state import error_response

log = get_logger("ingestd.http")

API = "api"
WEBHOOK = "webhook"
# The guard looks at its connections this often, at most (less for short deadlines).
SWEEP_SECONDS = 1.0


class RequestDeadline(Exception):
    """Set on a request body that did not arrive in time; answered 408."""


@dataclass(eq=False)
class _Conn:
    transport: asyncio.Transport
    peer: str
    listener: str
    since: float  # when it began waiting for a request
    received: int = 0  # bytes since then
    request: web.BaseRequest | None = None
    client_time: float = 0.0  # seconds the body was due while the server was reading
    last_sweep: float = 0.0
    cut_at: float | None = None  # when its body's deadline passed


@dataclass
class ConnectionGuard:
    """Every open connection of the guarded sites of one app, and the rules above."""

    settings: Settings
    metrics: Metrics
    _conns: dict[asyncio.BaseTransport, _Conn] = field(default_factory=dict)
    _per_ip: Counter[str] = field(default_factory=Counter)
    _sweeper: asyncio.Task[None] | None = None

    @property
    def header_timeout(self) -> float:
        return self.settings.http_header_timeout_seconds

    def open_connections(self, peer: str | None = None) -> int:
        return len(self._conns) if peer is None else self._per_ip[peer]

    # -- connections ------------------------------------------------------------------

    def admit(self, transport: asyncio.Transport, listener: str) -> _Conn | None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if peername else "unknown"
        reason = None
        if self._per_ip[peer] >= self.settings.http_max_connections_per_ip:
            reason = "per_ip"
        elif len(self._conns) >= self.settings.http_max_connections:
            reason = "total"
        if reason is not None:
            # Not logged one by one: a flood would flood the log. Counted.
            self.metrics.incr(f"http.refused.{reason}")
            return None
        conn = _Conn(transport, peer, listener, since=_now())
        self._conns[transport] = conn
        self._per_ip[peer] += 1
        self._start_sweeper()
        return conn

    def release(self, conn: _Conn) -> None:
        if self._conns.pop(conn.transport, None) is not None:
            self._per_ip[conn.peer] -= 1
            if self._per_ip[conn.peer] <= 0:
                del self._per_ip[conn.peer]

    def listener_of(self, request: web.BaseRequest) -> str | None:
        """Which guarded site the request came in on; None for an unguarded one."""
        conn = self._conns.get(request.transport) if request.transport else None
        return conn.listener if conn else None

    # -- requests (from the middleware) -------------------------------------------------

    def begin(self, request: web.BaseRequest) -> _Conn | None:
        conn = self._conns.get(request.transport) if request.transport else None
        if conn is not None:
            conn.request = request
            conn.client_time = 0.0
            conn.last_sweep = _now()
        return conn

    def end(self, conn: _Conn | None) -> None:
        if conn is not None:
            conn.request = None
            conn.cut_at = None
            conn.received = 0
            conn.since = _now()

    # -- deadlines ----------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep_forever(self) -> None:
        s = self.settings
        interval = min(
            SWEEP_SECONDS, s.http_header_timeout_seconds / 4, s.http_body_floor_seconds / 4
        )
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep(_now())
            except Exception:
                # The guard must outlive a surprise; the surprise is still reported.
                log.exception("connection sweep failed")

    def sweep(self, now: float) -> None:
        s = self.settings
        rate = s.http_body_min_rate_kib * 1024
        for conn in list(self._conns.values()):
            request = conn.request
            if request is None:
                if now - conn.since > s.http_header_timeout_seconds:
                    self.metrics.incr("http.refused.header_deadline")
                    conn.transport.close()
                    self.release(conn)
                continue
            if conn.cut_at is not None:
                # Cut, but its handler is not reading (the 408 comes when it does): do
                # not let it keep the socket longer than a header timeout.
                if now - conn.cut_at > s.http_header_timeout_seconds:
                    conn.transport.abort()
                    self.release(conn)
                continue
            body = request.content
            if not body.is_eof():
                if _reading(conn.transport):
                    conn.client_time += now - conn.last_sweep
                allowed = s.http_body_floor_seconds + conn.received / rate
                if conn.client_time > allowed:
                    self.metrics.incr("http.refused.body_deadline")
                    conn.cut_at = now
                    body.set_exception(
                        RequestDeadline(
                            f"the request body arrived slower than {s.http_body_min_rate_kib:g}"
                            f" KiB/s (after a {s.http_body_floor_seconds:g}s grace)"
                        )
                    )
            conn.last_sweep = now


def _now() -> float:
    return time.monotonic()


def _reading(transport: asyncio.Transport) -> bool:
    try:
        return bool(transport.is_reading())
    except (AttributeError, NotImplementedError):  # a transport without flow control
        return True


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, seen by the guard on its way in and out."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol, listener: str) -> None:
        self._guard = guard
        self._inner = inner
        self._listener = listener
        self._conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._conn = self._guard.admit(transport, self._listener)
        if self._conn is None:
            transport.abort()
            return
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._conn is None:
            return
        self._conn.received += len(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._conn is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is None:
            return
        self._guard.release(self._conn)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through ``guard``, tagged with ``listener``."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        listener: str = API,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard
        self._listener = listener

    async def start(self) -> None:
        # What TCPSite.start does, with the protocol factory wrapped.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        factory = server

        def guarded() -> asyncio.Protocol:
            return _GuardedProtocol(self._guard, factory(), self._listener)

        self._server = await asyncio.get_running_loop().create_server(
            guarded,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])


GUARD: web.AppKey[ConnectionGuard] = web.AppKey("ingestd_guard", ConnectionGuard)


@web.middleware
async def request_deadlines(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = request.app[GUARD]
    conn = guard.begin(request)
    try:
        return await handler(request)
    except RequestDeadline as exc:
        response = error_response(408, str(exc))
        response.force_close()
        return response
    finally:
        guard.end(conn)


# -- requests per token ---------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """A token bucket per key: ``rate`` per second, at most ``burst`` at once."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go; else the seconds until it may."""
        now = _now() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def too_many_requests(wait: float) -> web.Response:
    seconds = max(1, math.ceil(wait))
    response = error_response(
        429, f"this token's request rate is exceeded; retry in {seconds}s", retry_after=seconds
    )
    response.headers["Retry-After"] = str(seconds)
    return response
