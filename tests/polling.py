"""Waiting for a condition that another process brings about, without sleeping a
guessed time: poll until it holds, fail with what was awaited when it never does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_POLL_SECONDS = 0.02


def wait_until(
    check: Callable[[], Any],
    what: str,
    timeout: float,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy and return that; fail after
    ``timeout`` seconds (a safety net only), with ``on_timeout()``'s text appended."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out waiting for {what}\n{extra}")
        time.sleep(_POLL_SECONDS)
