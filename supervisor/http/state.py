"""What every HTTP handler shares: the app's state and how a response is written.

Handlers reach the state as ``request.app[STATE]``; the app module wires routes to
handlers and never the other way round.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from psycopg_pool import ConnectionPool

from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.jsonout import dumps
from ingestd.shared.llamaparse import LlamaParseClient
from ingestd.shared.llamaparse.setup import make_client
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.metrics import Metrics

T = TypeVar("T")

POOL_MAX = 8
MAX_CONCURRENT_UPLOADS = 4
# How long a request waits for a pooled connection before answering 503.
DB_WAIT_SECONDS = 5.0


@dataclass
class HttpState:
    settings: Settings
    url: str
    metrics: Metrics
    webhook_secret: str
    pool: ConnectionPool | None = None
    # Its own threads, one per pooled connection: streaming uploads occupy theirs for
    # long, and must not starve the loop's default executor (DNS lookups use it).
    executor: ThreadPoolExecutor | None = None
    # Each upload holds a pooled connection while it streams; the rest of the pool stays
    # free for status, readiness and webhooks.
    upload_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_UPLOADS)
    )
    _llamaparse: LlamaParseClient | None = field(default=None, repr=False)
    # The search embedder, built on the first search and kept warm (see ``embedder``).
    _embedder: Any = field(default=None, repr=False)
    _embedder_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def db(
        self, fn: Callable[..., T], *args: Any, pool_wait: float = DB_WAIT_SECONDS, **kwargs: Any
    ) -> T:
        """Run ``fn(conn, *args, **kwargs)`` on a pooled autocommit connection, in a thread."""
        pool = self.pool
        if pool is None or self.executor is None:
            raise RuntimeError("the HTTP app's database pool is not open (app not started)")

        def call() -> T:
            with pool.connection(timeout=pool_wait) as conn:
                return fn(conn, *args, **kwargs)

        # Copied context: log lines from the thread carry the request's correlation id.
        run = functools.partial(contextvars.copy_context().run, call)
        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    def llamaparse(self) -> LlamaParseClient:
        """Made on first use, on the serving loop (its HTTP session belongs to that loop)."""
        if self._llamaparse is None:
            self._llamaparse = make_client(self.settings, self.metrics)
        return self._llamaparse

    async def embedder(self) -> Any:
        """The configured embedder, built and loaded on first use in a thread (the local
        model takes seconds to load, which must not stall the loop), then kept for every
        later search."""
        async with self._embedder_lock:
            if self._embedder is None:
                embedder = await asyncio.to_thread(build_embedder, self.settings, self.metrics)
                load = getattr(embedder, "load", None)
                if load is not None:
                    await load()
                self._embedder = embedder
            return self._embedder

    async def aclose(self) -> None:
        llamaparse, self._llamaparse = self._llamaparse, None
        if llamaparse is not None:
            await llamaparse.aclose()
        embedder, self._embedder = self._embedder, None
        if embedder is not None:
            await embedder.aclose()


STATE: web.AppKey[HttpState] = web.AppKey("ingestd_state", HttpState)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


PROBLEM_JSON = "application/problem+json"
# The members RFC 9457 defines; ``extra`` adds to them and never replaces one.
_PROBLEM_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "correlation_id"})


def problem(status: int, message: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem object: ``type`` is about:blank, so ``title`` is the status
    phrase; ``detail`` says what went wrong with this request; ``correlation_id`` (the
    ``X-Correlation-Id`` header, in every log line the request caused) identifies it."""
    clash = _PROBLEM_MEMBERS & extra.keys()
    if clash:
        raise ValueError(f"problem extension members may not replace {sorted(clash)}")
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = message
    correlation_id = context.current()["correlation_id"]
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    body.update(extra)
    return body


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """The one way every handler answers an error: ``application/problem+json``."""
    return web.Response(
        text=dumps(problem(status, message, **extra)), status=status, content_type=PROBLEM_JSON
    )


def is_local_socket(request: web.Request) -> bool:
    """True when the request came through the local Unix socket (``INGESTD_HOME/run/
    api.sock``): the socket file's mode (0600, the daemon's user) is the caller's
    credential, as with docker.sock, so authentication treats it as an admin's.
    Read from the connection itself, so no middleware order can get it wrong."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX
