"""When ``run --drain`` is done, and with which exit code.

Done when nothing is runnable or in flight (0), or when documents ended ``dead`` because
they waited on an unavailable service past the horizon during this run (1: work failed).
Also done, without waiting forever, when the only documents left wait on an unavailable
service, and have for ``drain_blocked_seconds`` (3: a needed service is unreachable);
they stay queued, and a later run picks them up. The confirmation window is there
because "every document waits" is briefly true whenever a service blinks: it must hold
past the circuit breakers' reset, so that trial calls have failed again first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingestd.shared.db import reports, waiting
from ingestd.shared.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE

MAX_ERROR_CHARS = 160


@dataclass(frozen=True)
class Finished:
    code: int
    why: str  # for the log: a stable event text
    message: str | None  # the one line for the operator (None: nothing to say)
    services: Sequence[waiting.Waiting] = ()


class DrainCheck:
    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self._blocked_since: float | None = None

    def check(self, conn: psycopg.Connection[Any], now: float, *, window: float) -> Finished | None:
        """``now``: monotonic seconds; ``window``: ``drain_blocked_seconds``."""
        if reports.outstanding_documents(conn) == 0:
            self._blocked_since = None
            dead = waiting.waited_out_since(conn, self.started_at)
            if dead:
                n = sum(w.documents for w in dead)
                return Finished(
                    EXIT_FAILED,
                    "drain finished: documents died waiting on a service",
                    f"drain finished, but {_documents(n)} ended dead after waiting past the "
                    f"horizon for {_services(dead)}",
                    dead,
                )
            return Finished(EXIT_OK, "drain finished: nothing runnable or in flight", None)
        blocked = waiting.blocked(conn, in_flight_grace=window)
        if not blocked:
            self._blocked_since = None
            return None
        if self._blocked_since is None:
            self._blocked_since = now
        if now - self._blocked_since < window:
            return None
        n = sum(w.documents for w in blocked)
        return Finished(
            EXIT_UNREACHABLE,
            "drain stopped: only documents waiting on an unavailable service are left",
            f"drain stopped: {_documents(n)} waiting on {_services(blocked)}; "
            "they stay queued for the next run",
            blocked,
        )


def _documents(n: int) -> str:
    return f"{n} document{'s' if n != 1 else ''}"


def _services(groups: Sequence[waiting.Waiting]) -> str:
    def one(w: waiting.Waiting) -> str:
        count = f"{_documents(w.documents)}, " if len(groups) > 1 else ""
        return (
            f"{w.service} ({count}up to {w.longest_seconds:.0f} s; "
            f"last error: {_clip(w.last_error)})"
        )

    return ", ".join(one(w) for w in groups)


def _clip(text: str | None) -> str:
    if not text:
        return "none recorded"
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"
