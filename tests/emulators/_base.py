"""What both emulators share: an aiohttp server on a loopback port, request records, helpers.

An emulator is started and stopped on one event loop (``await start()`` / ``await stop()``);
``tests.emulators.runner.running`` gives it a loop of its own in a background thread.
Its config is a mutable dataclass read on every request, so a test may change it between
requests; its ``stats`` are written only on the emulator's loop and read from anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from aiohttp import web

T = TypeVar("T")
_log = logging.getLogger(__name__)

DEFAULT_RECORDED_HEADERS: tuple[str, ...] = (
    "x-correlation-id",
    "idempotency-key",
    "x-stainless-retry-count",
)

# Handlers still running when the emulator stops (a "slow" fault asleep) are given this long.
_SHUTDOWN_GRACE_S = 0.25


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the emulator saw it. ``headers`` holds only the recorded header names."""

    time: float
    method: str
    path: str
    status: int | None  # None: the connection was dropped without a response
    headers: dict[str, str]
    n_inputs: int = 0
    tokens: int = 0
    fault: str | None = None


@dataclass
class BaseStats:
    requests: int = 0
    status_counts: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=100_000))

    def count(self, status: int) -> int:
        return self.status_counts[status]

    def _record(self, rec: RequestRecord) -> None:
        self.requests += 1
        if rec.status is None:
            self.dropped += 1
        else:
            self.status_counts[rec.status] += 1
        self.records.append(rec)


def recorded_headers(request: web.Request, names: Iterable[str]) -> dict[str, str]:
    return {name: request.headers[name] for name in names if name in request.headers}


def bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_id() -> str:
    return "req_" + uuid.uuid4().hex


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration.String()`` at millisecond precision ("1s", "6m0s",
    "120ms", "2.812s"), which is how the OpenAI rate-limit reset headers are written."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rem = divmod(ms, 3_600_000)
    minutes, rem = divmod(rem, 60_000)
    secs, millis = divmod(rem, 1000)
    sec_text = f"{secs}.{millis:03d}".rstrip("0").rstrip(".") if millis else str(secs)
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"


def drop_connection(request: web.Request) -> None:
    """Close the socket under a request so the client sees a connection error, not a reply."""
    transport = request.transport
    if transport is not None:
        transport.abort()


FaultT = TypeVar("FaultT", bound=StrEnum)


class FaultConfig(Protocol[FaultT]):
    faults: deque[FaultT]
    fault_rates: dict[FaultT, float]
    seed: int


class HTTPEmulator:
    """An aiohttp app bound to ``host:port`` (port 0 picks a free one); ``url`` after start."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_body: int) -> None:
        self.host = host
        self.port = port
        self._max_body = max_body
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._url: str | None = None
        self.background_errors: list[BaseException] = []

    # -- faults ------------------------------------------------------------------------------
    _rng_seed: int
    _rng: random.Random

    def _next_fault(self, kinds: type[FaultT], cfg: FaultConfig[FaultT]) -> FaultT | None:
        """The next injected fault if any, else one rolled from ``cfg.fault_rates``."""
        if cfg.faults:
            try:
                return cfg.faults.popleft()
            except IndexError:  # emptied by another thread between the check and the pop
                pass
        if not cfg.fault_rates:
            return None
        if cfg.seed != self._rng_seed:
            self._rng_seed = cfg.seed
            self._rng = random.Random(cfg.seed)
        roll = self._rng.random()
        edge = 0.0
        for kind in kinds:  # fixed order, so a seed replays the same faults
            edge += cfg.fault_rates.get(kind, 0.0)
            if roll < edge:
                return kind
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._url

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._loop

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=self._max_body, middlewares=[self._track])
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        bound_port = int(runner.addresses[0][1])
        self.port = bound_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._tasks) + list(self._handlers):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        self._url = None

    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # Tracked so stop() need not wait out a handler asleep in a "slow" fault.
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._handlers.discard(task)

    # -- background work ---------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A bug in the emulator itself: kept so wait_idle() raises it in the test.
            exc = task.exception()
            assert exc is not None
            self.background_errors.append(exc)
            _log.error("emulator background task failed", exc_info=exc)

    async def wait_idle(self, within: float = 10.0) -> None:
        """Wait until every background task (job progression, webhook delivery) has finished;
        raise the first error a background task died of."""
        async with asyncio.timeout(within):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.background_errors:
            raise self.background_errors[0]

    def _call_on_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the emulator's loop, from that loop or from any other thread."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)


def now_s() -> float:
    return time.time()
