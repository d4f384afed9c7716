"""The worker's one event loop, and what must be closed on it before it goes.

HTTP clients (the embedder's, LlamaParse's) live on this loop across documents so their
connection pools and breakers span them; each is closed on the same loop when the worker
stops, never left for the garbage collector (aiohttp then reports an unclosed session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ingestd.shared.embedders.base import Embedder

_RUNNER: asyncio.Runner | None = None
_CLOSERS: list[Callable[[], Awaitable[object]]] = []


def worker_runner() -> asyncio.Runner:
    """One event loop per worker process, kept across documents."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = asyncio.Runner()
    return _RUNNER


def close_on_exit(aclose: Callable[[], Awaitable[object]]) -> None:
    """Have ``close_runner`` await ``aclose()`` on the loop before closing it."""
    if aclose not in _CLOSERS:
        _CLOSERS.append(aclose)


def close_runner(embedder: Embedder | None = None) -> None:
    """Close the embedder's HTTP client and every registered one on the loop they were
    used on, then the loop."""
    global _RUNNER
    if _RUNNER is None:
        return
    aclose = getattr(embedder, "aclose", None)
    closers = ([aclose] if aclose is not None else []) + _CLOSERS
    _CLOSERS.clear()
    try:
        for close in closers:
            _RUNNER.run(close())
    finally:
        _RUNNER.close()
        _RUNNER = None
