"""Run an emulator on an event loop of its own in a background thread.

For synchronous pytest fixtures, and for tests where other processes (workers, the CLI)
talk to the emulator while the test thread does something else:

    with running(OpenAIEmulator()) as api:
        client = openai.OpenAI(api_key=..., base_url=api.base_url)
        ...
        call(api, api.wait_idle())   # run a coroutine on the emulator's loop and wait for it
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

_START_STOP_TIMEOUT_S = 30.0


class _Emulator(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...


E = TypeVar("E", bound=_Emulator)
T = TypeVar("T")


@contextmanager
def running(emulator: E) -> Iterator[E]:
    """Start ``emulator`` on a new loop in a daemon thread; stop it and the loop on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_forever, name=f"{type(emulator).__name__}-loop", daemon=True
    )
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(_START_STOP_TIMEOUT_S)
        try:
            yield emulator
        finally:
            asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(_START_STOP_TIMEOUT_S)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_START_STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"{thread.name} did not stop")
        loop.close()


def call(emulator: _Emulator, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run ``coro`` on the emulator's loop from another thread and return its result."""
    return asyncio.run_coroutine_threadsafe(coro, emulator.loop).result(timeout)
