"""Running checks: each on a thread of its own with a deadline.

A check that overruns is reported as failed and left behind on a daemon thread, which
ends with the process: a hung service must not hang ``doctor``. An unexpected exception
inside a check is that check's failure (its type and first line), never a traceback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestd.shared.errors import ConfigError, named_first_line
from ingestd.shared.settings import Settings
from ingestd.supervisor.doctor.findings import Finding, Result, fail, skip


@dataclass(frozen=True)
class Options:
    timeout: float = 10.0  # seconds per check
    deep: bool = False  # load the local model and embed one text (imports torch)
    send_test_event: bool = False  # send one Sentry event
    min_free_mb: int = 1024  # warn below this much free disk
    unit: Path | None = None  # check this unit file instead of the installed one


@dataclass
class Context:
    settings: Settings
    options: Options
    # Set by the database check, read by the checks that need the database.
    db_url: str | None = None
    embedded: bool = False
    conn: Any = None
    details: dict[str, Any] = field(default_factory=dict)


Check = Callable[[Context], Result]


@dataclass(frozen=True)
class NamedCheck:
    name: str
    fn: Check
    # The embedded server's first start runs initdb: longer than any one request.
    min_timeout: float = 0.0


def _run_one(check: Check, ctx: Context, box: list[tuple[Result, float]]) -> None:
    started = time.monotonic()
    try:
        result = check(ctx)
    except ConfigError as exc:
        result = fail(named_first_line(exc).removeprefix("ConfigError: "), "correct that setting")
    except Exception as exc:
        result = fail(
            f"unexpected {named_first_line(exc)}",
            "a bug in this check or in its service: report it with this line",
        )
    box.append((result, time.monotonic() - started))


def run_checks(
    checks: Sequence[NamedCheck], ctx: Context, *, parallel: bool = True
) -> list[Finding]:
    """Run ``checks``, each under its deadline: at once when they are independent, else
    one after the other (checks sharing the database connection)."""
    boxes: list[list[tuple[Result, float]]] = [[] for _ in checks]
    threads = [
        threading.Thread(
            target=_run_one, args=(c.fn, ctx, box), name=f"doctor-{c.name}", daemon=True
        )
        for c, box in zip(checks, boxes, strict=True)
    ]
    started = time.monotonic()
    if parallel:
        for t in threads:
            t.start()
    findings: list[Finding] = []
    for c, t, box in zip(checks, threads, boxes, strict=True):
        limit = max(ctx.options.timeout, c.min_timeout)
        if not parallel and findings and not findings[-1].answered:
            # The one before still holds what these share (the connection).
            findings.append(Finding(c.name, skip(f"not run: {findings[-1].name} hung"), 0.0))
            continue
        if not parallel:
            started = time.monotonic()
            t.start()
        t.join(max(0.0, started + limit - time.monotonic()))
        if box:
            result, elapsed = box[0]
        else:
            result = fail(
                f"no answer within {limit:g} s",
                "the service hangs or is unreachable; raise --timeout if it is only slow",
            )
            elapsed = limit
        findings.append(Finding(c.name, result, elapsed, answered=bool(box)))
    return findings
