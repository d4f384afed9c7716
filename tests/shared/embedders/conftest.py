from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulators import OpenAIEmulator, OpenAIEmulatorConfig, running


@pytest.fixture
def openai_api() -> Iterator[OpenAIEmulator]:
    """A fresh emulator per test (starting one takes milliseconds), on a free port."""
    with running(OpenAIEmulator(OpenAIEmulatorConfig())) as api:
        yield api
