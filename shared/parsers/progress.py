"""How a parser says it consumed input, whether or not that input yielded text.

A worker's heartbeat and its time budget follow progress, not output: 100,000 blank
pages yield no block, but each page read is progress, so the worker is neither taken
for hung nor left to run past its budget unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Consumed:
    """``done`` units of the input read so far, out of ``total`` when known."""

    unit: str  # "page" or "character"
    done: int
    total: int | None = None

    def describe(self) -> str:
        """For a message: "page 2,140" or "3,145,728 characters"."""
        if self.unit == "page":
            return f"page {self.done:,}"
        return f"{self.done:,} {self.unit}s"


Progress = Callable[[Consumed], None]


def ignore(_consumed: Consumed) -> None:
    """What a parser reports to when nobody watches it (the CLI, benchmarks)."""
