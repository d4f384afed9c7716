"""ingestd's HTTP server: the application and the supervised child process that serves it.

``build_app`` wires the routes to one ``HttpState`` (settings, a PostgreSQL pool opened
when the app starts, metrics, the webhook secret, a LlamaParse client made on first use).
``http_main`` is what the supervisor runs in the forked HTTP child: ``shared.child``
sets up logging, Sentry and metrics afresh (as for a worker) and leaves through
``os._exit``; in between it serves until SIGTERM, heartbeating to the supervisor over
the channel pipe.

Database work goes through a synchronous ``psycopg_pool`` in worker threads, so the
HTTP child runs exactly the SQL the CLI and the workers run (``gather_status``,
``ingest_stream``, ``shared.db.webhooks``) instead of an async copy that could drift.

Routes:

| route                          | answers                                                  |
|--------------------------------|----------------------------------------------------------|
| GET  /healthz                  | 200 {"status": "ok"} while the process serves            |
| GET  /readyz                   | 200 when the database is reachable, its schema current   |
|                                | and a worker heartbeat fresh; else 503 with the reason   |
| GET  /v1/status                | 200 ``supervisor.status.gather_status`` (= status --json)|
| POST /v1/documents             | 201 new / 200 same bytes already stored; 400, 413, 415,  |
|                                | 422 (empty file)                                         |
| GET  /v1/documents/{id}        | 200 {"document", "events"} (= show --json); 404          |
| POST /v1/webhooks/llamaparse   | see ``supervisor.http.webhooks``                         |

Every response carries ``X-Correlation-Id`` (the caller's, when well-formed, else a new
one), bound for every log line the request causes. A database that cannot be reached
answers 503; an unexpected error 500 (logged and reported, never with a body).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import psycopg
import sentry_sdk
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.child import Role, Started, run_child
from ingestd.shared.db.connect import database_url
from ingestd.shared.errors import ConfigError
from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.llamaparse.setup import resolve_webhook_secret
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger, reopen_log_files
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.http import health, uploads, webhooks

# -- auth and limits (supervisor.http.auth, .limits, .exposure) --
from ingestd.supervisor.http.auth import LIMITER, authorize, refuse_open_exposure
from ingestd.supervisor.http.exposure import hide_server_banner
from ingestd.supervisor.http.limits import (
    API,
    GUARD,
    WEBHOOK,
    ConnectionGuard,
    GuardedSite,
    RateLimiter,
    request_deadlines,
)

# --
from ingestd.supervisor.http.state import POOL_MAX, STATE, HttpState, error_response

T = TypeVar("T")

log = get_logger("ingestd.http")

CORRELATION_HEADER = "X-Correlation-Id"
_CORRELATION_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HEARTBEAT_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0
# After refusing a large body (413) the server reads and discards what the client still
# sends, so the client can read the answer before the socket closes; not for long.
LINGER_SECONDS = 1.0
RUNNER_OPTIONS: dict[str, Any] = {
    "access_log": None,  # the middleware logs each request, structured
    "handle_signals": False,
    "shutdown_timeout": SHUTDOWN_GRACE_SECONDS,
    "lingering_time": LINGER_SECONDS,
}


CORRELATION: web.RequestKey[str] = web.RequestKey("ingestd_correlation_id", str)


def _correlation_id(raw: str | None) -> str:
    # Only a well-formed id is kept: it is echoed in a header and written to every log line.
    if raw and _CORRELATION_RE.fullmatch(raw):
        return raw
    return context.new_correlation_id()


@web.middleware
async def _request_context(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    cid = _correlation_id(request.headers.get(CORRELATION_HEADER))
    request[CORRELATION] = cid
    started = time.perf_counter()
    response: web.StreamResponse
    with context.bind_correlation(cid):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[CORRELATION_HEADER] = cid
            _access(request, exc.status, started)
            raise
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("database unavailable", error=type(exc).__name__)
            response = error_response(503, "database unavailable")
        except Exception as exc:
            log.exception("request failed")
            sentry_sdk.capture_exception(exc)
            response = error_response(500, "internal error")
        response.headers[CORRELATION_HEADER] = cid
        _access(request, response.status, started)
    return response


def _access(request: web.Request, status: int, started: float) -> None:
    # The path only: query strings and bodies are never logged.
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=status,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )


def build_app(
    settings: Settings, *, url: str | None = None, metrics: Metrics | None = None
) -> web.Application:
    """The application. Nothing is connected until it starts (``AppRunner.setup``), so
    it can be built before fork and started in the child."""
    state = HttpState(
        settings=settings,
        url=url or database_url(settings),
        metrics=metrics or Metrics(None, role="http"),
        webhook_secret=resolve_webhook_secret(settings),
    )
    # -- auth and limits: outermost first; the deadline wraps everything that reads --
    hide_server_banner()
    app = web.Application(middlewares=[_request_context, request_deadlines, authorize])
    app[STATE] = state
    app[GUARD] = ConnectionGuard(settings, state.metrics)
    app[LIMITER] = RateLimiter(settings.api_rate_per_second, settings.api_rate_burst)
    app.on_cleanup.append(_stop_guard)
    # --
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/v1/status", health.status)
    app.router.add_get("/v1/documents/{document_id}", health.document)
    app.router.add_post("/v1/documents", uploads.upload)
    app.router.add_post("/v1/webhooks/llamaparse", webhooks.llamaparse_webhook)
    return app


async def _stop_guard(app: web.Application) -> None:
    await app[GUARD].stop()


async def _resources(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    pool = ConnectionPool(
        state.url,
        min_size=1,
        max_size=POOL_MAX,
        kwargs={"autocommit": True, "row_factory": dict_row, "application_name": "ingestd-http"},
        open=False,
        name="ingestd-http",
        # A connection broken by a database restart is replaced, not handed to a request.
        check=ConnectionPool.check_connection,
    )
    # Not waiting for a first connection: the server answers /healthz (and 503 on
    # /readyz) while the database is down, and the pool keeps trying.
    await asyncio.to_thread(pool.open, wait=False)
    state.pool = pool
    state.executor = ThreadPoolExecutor(max_workers=POOL_MAX, thread_name_prefix="ingestd-db")
    try:
        yield
    finally:
        client, state._llamaparse = state._llamaparse, None
        if client is not None:
            await client.aclose()
        executor, state.executor = state.executor, None
        state.pool = None
        await asyncio.to_thread(executor.shutdown, wait=True)
        await asyncio.to_thread(pool.close)


# -- the child process ----------------------------------------------------------------------


def http_main(settings: Settings, channel_fd: int | None) -> NoReturn:
    """The HTTP child's whole life after fork; exits 0 after a graceful stop."""
    run_child(Role("http"), settings, channel_fd, _main)


def _main(started: Started) -> int:
    asyncio.run(serve(started.settings, channel=started.channel, metrics=started.metrics))
    return EXIT_OK


async def serve(
    settings: Settings,
    *,
    channel: WorkerChannel | None = None,
    metrics: Metrics | None = None,
    url: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve on ``http_host:http_port`` until SIGTERM/SIGINT/SIGUSR2 (or ``stop`` is set)."""
    channel = channel or WorkerChannel(None)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGQUIT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reopen_log_files)
    app = build_app(settings, url=url, metrics=metrics)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    try:
        await refuse_open_exposure(app[STATE])
        await _listen(runner, settings.http_host, settings.http_port, API, "http_port")
        if settings.webhook_port is not None:
            host = settings.webhook_host or settings.http_host
            await _listen(runner, host, settings.webhook_port, WEBHOOK, "webhook_port")
        # The heartbeat comes from the serving loop itself: a loop stuck in a handler
        # stops beating, and the supervisor replaces the process.
        while not stop.is_set():
            channel.beat(force=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)
        channel.beat(event="stopping", force=True)
        log.info("http server stopping")
    finally:
        await runner.cleanup()


async def _listen(runner: web.AppRunner, host: str, port: int, listener: str, key: str) -> None:
    site = GuardedSite(
        runner, host, port, guard=runner.app[GUARD], listener=listener, reuse_address=True
    )
    try:
        await site.start()
    except OSError as exc:
        # Restarting cannot free the port: exit as a configuration error, which stops
        # the daemon (as gunicorn does) instead of a half-alive one that says ready.
        raise ConfigError(
            f"the HTTP server cannot listen on {host}:{port}: {exc.strerror or exc};"
            f" set INGESTD_{key.upper()} (or {key}) to a free port"
        ) from None
    log.info("http server listening", host=host, port=port, listener=listener)
