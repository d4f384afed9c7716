"""Time budgets: how long one stage of one input may take, in proportion to its size.

A parse, chunk or embed stage gets ``budget_floor_seconds`` plus a rate per unit of
its input (MiB of file when parsing, pages of a PDF once known, MiB of text when
chunking, thousands of tokens when embedding), never more than
``budget_ceiling_seconds`` nor ``stage_deadline_seconds``.

Who is blamed for an overrun is decided here, once:

- parsing (by a local parser) or chunking one document: the input, which is bigger
  inside than it looks: ``failed`` (``invalid_input``) on the first attempt;
- embedding, a remote parser, or a stage of a group of documents that no single one
  can be blamed for: the service or the machine (``deadline``, retried).

The worker checks its budget at every checkpoint and at every bit of parser progress
(cheap, and it names how far it got); it sends the budget with its heartbeat, and the
supervisor kills a worker that runs past it by ``KILL_SLACK_SECONDS`` (a parser stuck
in C code never reaches a check).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ingestd.shared.errors import ErrorClass, IngestError
from ingestd.shared.parsers.progress import Consumed
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status

MIB = 1024 * 1024

# The supervisor waits this much past a budget before killing: the worker's own check,
# a cheaper and more precise stop, comes first whenever the worker can run Python.
KILL_SLACK_SECONDS = 2.0

BUDGETED = frozenset({Status.PARSING, Status.CHUNKING, Status.EMBEDDING})


class Blame(StrEnum):
    INPUT = "input"  # the document is bigger inside than it looks
    SERVICE = "service"  # a service or the machine was too slow

    @property
    def error_class(self) -> ErrorClass:
        return ErrorClass.INVALID_INPUT if self is Blame.INPUT else ErrorClass.DEADLINE


def blame(stage: Status, *, alone: bool, local_parser: bool) -> Blame:
    if alone and (stage is Status.CHUNKING or (stage is Status.PARSING and local_parser)):
        return Blame.INPUT
    return Blame.SERVICE


@dataclass(frozen=True)
class Size:
    """What a stage's input amounts to; None where it does not apply."""

    bytes: int | None = None
    chars: int | None = None
    pages: int | None = None
    tokens: int | None = None

    def describe(self) -> str:
        parts = []
        if self.bytes is not None:
            parts.append(_mib(self.bytes))
        if self.chars is not None:
            parts.append(f"{self.chars:,} characters")
        if self.pages is not None:
            parts.append(f"{self.pages:,} pages")
        if self.tokens is not None:
            parts.append(f"{self.tokens:,} tokens")
        return " / ".join(parts) or "its input"

    def __add__(self, other: Size) -> Size:
        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None and b is None else (a or 0) + (b or 0)

        return Size(
            add(self.bytes, other.bytes),
            add(self.chars, other.chars),
            add(self.pages, other.pages),
            add(self.tokens, other.tokens),
        )


def _mib(n: int) -> str:
    if n < MIB:
        return f"{n / 1024:,.0f} KiB" if n >= 1024 else f"{n:,} bytes"
    mib = n / MIB
    return f"{mib:,.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB"


def size_of(stage: Status, doc: Mapping[str, Any]) -> Size:
    """What ``stage`` reads of a document, from its row."""
    if stage is Status.PARSING:
        return Size(bytes=doc.get("size_bytes") or 0)
    if stage is Status.CHUNKING:
        return Size(chars=doc.get("parsed_chars") or 0)
    if stage is Status.EMBEDDING:
        return Size(tokens=doc.get("tokens_total") or 0)
    return Size()


def seconds_for(stage: Status, size: Size, s: Settings) -> float:
    """The budget of ``stage`` for an input of ``size``: floor + rates, within the ceiling."""
    total = s.budget_floor_seconds
    if stage is Status.PARSING:
        total += (size.bytes or 0) / MIB * s.budget_seconds_per_mib
        total += (size.pages or 0) * s.budget_seconds_per_page
    elif stage is Status.CHUNKING:
        # A character is at least a byte of text.
        total += (size.chars or 0) / MIB * s.budget_seconds_per_mib
    elif stage is Status.EMBEDDING:
        total += (size.tokens or 0) / 1000 * s.budget_seconds_per_1k_tokens
    return min(total, s.budget_ceiling_seconds, s.stage_deadline_seconds)


def format_seconds(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:g} s"


def overrun_message(stage: str, seconds: float, basis: str, done: str | None) -> str:
    """Why a stage was stopped, in the words stored on the document."""
    message = f"{stage} took longer than its {format_seconds(seconds)} budget for {basis}"
    return f"{message}; stopped after {done}" if done else message


class BudgetExceeded(IngestError):
    """A stage ran past its budget; its class says who is blamed (``Blame``)."""


class StageBudget:
    """A worker's running budget for one stage of one input (or one group)."""

    def __init__(
        self,
        stage: Status,
        size: Size,
        settings: Settings,
        blame: Blame,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.size = size
        self.blame = blame
        self.done: str | None = None
        self._settings = settings
        self._clock = clock
        self.started = clock()
        self.seconds = seconds_for(stage, size, settings)

    @property
    def basis(self) -> str:
        return self.size.describe()

    def consumed(self, progress: Consumed) -> None:
        """Note how far the input was read; a PDF's page count, once known, is part of
        its size."""
        self.done = progress.describe()
        pages = progress.total if progress.unit == "page" else None
        if pages is not None and pages != self.size.pages:
            self.size = replace(self.size, pages=pages)
            self.seconds = seconds_for(self.stage, self.size, self._settings)

    def wire(self) -> dict[str, Any]:
        """What the heartbeat carries (``shared.channel``), for the supervisor's kill."""
        return {
            "seconds": self.seconds,
            "blame": str(self.blame),
            "basis": self.basis,
            "done": self.done,
        }

    def message(self) -> str:
        return overrun_message(str(self.stage), self.seconds, self.basis, self.done)

    def check(self) -> None:
        if self._clock() - self.started > self.seconds:
            raise BudgetExceeded(self.message(), error_class=self.blame.error_class)
