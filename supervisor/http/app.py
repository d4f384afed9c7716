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

Routes (``supervisor.http.openapi`` describes each; ``GET /v1/openapi.json`` serves it):

| route                              | module                                              |
|------------------------------------|-----------------------------------------------------|
| GET  /healthz, /readyz, /v1/status | ``health``                                          |
| POST /v1/documents                 | ``uploads`` (streamed; Idempotency-Key)             |
| GET  /v1/documents[/{id}]          | ``documents`` (keyset-paged listing; one document)  |
| POST /v1/documents/{id}/retry      | ``documents``                                       |
| DELETE /v1/documents/{id}          | ``documents``                                       |
| GET  /v1/search                    | ``search`` (the embedder kept warm)                 |
| GET  /v1/openapi.json              | ``openapi``                                         |
| POST /v1/webhooks/llamaparse       | ``webhooks``                                        |

The same app is served on ``http_host:http_port`` and on the Unix socket
``INGESTD_HOME/run/api.sock`` (mode 0600: the local CLI's way in, see
``state.is_local_socket``).

Every response carries ``X-Correlation-Id`` (the caller's, when well-formed, else a new
one), bound for every log line the request causes. Every error is
``application/problem+json`` (``state.error_response``; aiohttp's own 404, 405, 413 and
malformed-request answers are converted in ``problems``). A database that cannot be
reached answers 503; an unexpected error 500 (logged and reported, with no detail).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import sentry_sdk
from aiohttp import web
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.child import Role, Started, run_child
from ingestd.shared.db.connect import configure, database_url
from ingestd.shared.errors import ConfigError
from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.llamaparse.setup import resolve_webhook_secret
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger, reopen_log_files
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.http import documents, health, openapi, problems, search, uploads, webhooks

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
from ingestd.supervisor.local_api import socket_path

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
            if exc.status < 400:  # a redirect is not an error
                exc.headers[CORRELATION_HEADER] = cid
                _access(request, exc.status, started)
                raise
            response = problems.from_http_exception(exc, request)
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
    get = functools.partial(app.router.add_get, allow_head=False)
    get("/healthz", health.healthz)
    get("/readyz", health.readyz)
    get("/v1/status", health.status)
    get("/v1/openapi.json", openapi.openapi)
    get("/v1/documents", documents.list_documents)
    get("/v1/documents/{document_id}", documents.document)
    app.router.add_post("/v1/documents", uploads.upload)
    app.router.add_post("/v1/documents/{document_id}/retry", documents.retry)
    app.router.add_delete("/v1/documents/{document_id}", documents.delete)
    get("/v1/search", search.search)
    app.router.add_post("/v1/webhooks/llamaparse", webhooks.llamaparse_webhook)
    return app


async def start_local_site(runner: web.AppRunner, path: Path) -> web.UnixSite:
    """Serve ``runner`` on the Unix socket ``path``, readable and writable by this user
    only: whoever can open it is treated as the daemon's operator."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_socket(path)  # one left by a process that did not stop cleanly
    # The umask makes the socket 0600 from the moment it exists: no window for a chmod race.
    old = os.umask(0o177)
    try:
        site = web.UnixSite(runner, str(path))
        await site.start()
    finally:
        os.umask(old)
    return site


def remove_socket(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def make_runner(app: web.Application) -> web.AppRunner:
    return problems.ApiRunner(app, **RUNNER_OPTIONS)


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
        configure=configure,  # search passes its query vector as a parameter
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
        await state.aclose()
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
    runner = make_runner(app)
    await runner.setup()
    try:
        await refuse_open_exposure(app[STATE])
        await _listen(runner, settings.http_host, settings.http_port, API, "http_port")
        if settings.webhook_port is not None:
            host = settings.webhook_host or settings.http_host
            await _listen(runner, host, settings.webhook_port, WEBHOOK, "webhook_port")
        # The local socket: the CLI's way in (file permission as credential).
        local = socket_path(settings)
        await start_local_site(runner, local)
        log.info("local api listening", socket=str(local))
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
        remove_socket(socket_path(settings))


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
