"""The worker's event loop closes every HTTP client registered on it before it goes."""

from __future__ import annotations

import asyncio

from ingestd.workers.loop import close_on_exit, close_runner, worker_runner


class _Client:
    def __init__(self) -> None:
        self.closed_on: asyncio.AbstractEventLoop | None = None

    async def aclose(self) -> None:
        self.closed_on = asyncio.get_running_loop()


def test_registered_clients_and_the_embedder_close_on_their_own_loop() -> None:
    runner = worker_runner()
    loop = runner.get_loop()
    llamaparse, embedder = _Client(), _Client()
    close_on_exit(llamaparse.aclose)
    close_on_exit(llamaparse.aclose)  # registered once however often it is asked

    close_runner(embedder)  # type: ignore[arg-type]

    assert llamaparse.closed_on is loop and embedder.closed_on is loop
    assert loop.is_closed()
    assert worker_runner() is not runner  # the next use starts a fresh loop
    close_runner()
