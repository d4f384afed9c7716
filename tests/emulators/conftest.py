"""Fixtures for the emulator tests: emulators on their own loops, a raw HTTP helper, a clock."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from tests.emulators import (
    LlamaParseEmulator,
    LlamaParseEmulatorConfig,
    OpenAIEmulator,
    OpenAIEmulatorConfig,
    running,
)


class FakeClock:
    """A monotonic clock the test moves by hand, so budgets refill without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    payload: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One raw HTTP request (stdlib only), answering non-2xx replies instead of raising."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def start_openai() -> Iterator[Callable[..., OpenAIEmulator]]:
    with ExitStack() as stack:

        def start(
            config: OpenAIEmulatorConfig | None = None, clock: Callable[[], float] | None = None
        ) -> OpenAIEmulator:
            kwargs = {} if clock is None else {"clock": clock}
            return stack.enter_context(running(OpenAIEmulator(config, **kwargs)))

        yield start


@pytest.fixture
def start_llamaparse() -> Iterator[Callable[..., LlamaParseEmulator]]:
    with ExitStack() as stack:

        def start(
            config: LlamaParseEmulatorConfig | None = None,
            clock: Callable[[], float] | None = None,
        ) -> LlamaParseEmulator:
            kwargs = {} if clock is None else {"clock": clock}
            return stack.enter_context(running(LlamaParseEmulator(config, **kwargs)))

        yield start
