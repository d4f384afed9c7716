"""What every HTTP handler shares: the app's state and how a response is written.

Handlers reach the state as ``request.app[STATE]``; the app module wires routes to
handlers and never the other way round.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from psycopg_pool import ConnectionPool

from ingestd.shared.jsonout import dumps
from ingestd.shared.llamaparse import LlamaParseClient
from ingestd.shared.llamaparse.setup import make_client
from ingestd.shared.settings import Settings
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


STATE: web.AppKey[HttpState] = web.AppKey("ingestd_state", HttpState)
STATE: web.AppKey[HttpState] = web.AppKey("ingestd_state", HttpState)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=dumps)


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)
