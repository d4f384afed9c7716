"""Structured logging for every ingestd process: structlog over stdlib ``logging``.

One line per event. JSON (one object per line) when the output is not a terminal
(journald, files, pipes) or ``json=True``; a readable console rendering on a TTY.
Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``role``,
``slot``, ``pid``, ``event`` and, when bound (see ``context``), ``correlation_id``,
``document_id`` and ``stage``.

Records from third-party libraries that use stdlib ``logging`` (aiohttp, psycopg,
openai…) go through the same processors, so they are stamped and scrubbed too.

Nothing secret and no document text reaches a line: keys named like secrets are
masked, registered secret values are masked wherever they appear (including inside
tracebacks), and fields named ``text``/``content``/``body``/``payload``/``input``
are replaced by their size (see ``scrub``).

After ``fork`` a child calls ``configure_logging`` again with its own role and slot;
the handlers inherited from the parent are detached (their file descriptors closed in
the child only) and replaced.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.scrub import (
    REDACTED,
    is_secret_key,
    is_text_key,
    scrub_string,
    withheld,
)

__all__ = ["configure_logging", "get_logger", "redirect_console", "reopen_log_files"]

# Longest value kept in a log field; longer strings are truncated (they are never what a
# human reads in a log, and the cap bounds what a mistake elsewhere can leak).
MAX_FIELD_CHARS = 2048
MAX_EXCEPTION_CHARS = 16384

_CONTEXT_KEYS = ("correlation_id", "document_id", "stage")
# Libraries whose INFO lines are noise at ingestd's INFO: shown from DEBUG on.
_CHATTY_LIBRARIES = ("pgserver",)

_installed_handlers: list[logging.Handler] = []
_structlog_configured = False
# Where terminal lines go instead of sys.stderr (``redirect_console``); None: sys.stderr.
_console: IO[str] | None = None


def _add_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ctx = context.current()
    # Explicit fields win over the bound context (e.g. the supervisor logging about another
    # worker's document); role/slot/pid always describe the process writing the line.
    event_dict["role"] = ctx["role"]
    event_dict["slot"] = ctx["slot"]
    event_dict["pid"] = os.getpid()
    for key in _CONTEXT_KEYS:
        if event_dict.get(key) is None:
            event_dict[key] = ctx[key]
    if ctx["document_ids"] is not None and event_dict["document_id"] is None:
        event_dict["document_ids"] = ctx["document_ids"]
        event_dict["correlation_ids"] = ctx["correlation_ids"]
    return event_dict


_FIRST_KEYS = (
    "timestamp",
    "level",
    "event",
    "role",
    "slot",
    "pid",
    *_CONTEXT_KEYS,
    "logger",
)


def _guard_and_scrub(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Fixed keys first and the traceback last, so lines read the same in a terminal or a pager.
    ordered = {k: event_dict[k] for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    if "exception" in ordered:
        ordered["exception"] = ordered.pop("exception")
    return _scrub_fields(ordered)


def _scrub_fields(event_dict: EventDict) -> EventDict:
    out: EventDict = {}
    for key, value in event_dict.items():
        if key == "event":
            out[key] = scrub_string(str(value), MAX_FIELD_CHARS)
        elif key == "exception" and isinstance(value, str):
            out[key] = scrub_string(value, MAX_EXCEPTION_CHARS)
        elif is_secret_key(key):
            out[key] = None if value is None else REDACTED
        elif is_text_key(key):
            # Refused: chunk or document text never reaches a log, only its size does.
            out[key] = None if value is None else withheld(value)
        else:
            out[key] = _scrub_field(value)
    return out


def _scrub_field(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_string(value, MAX_FIELD_CHARS)
    if isinstance(value, dict):
        return _scrub_fields(dict(value))
    if isinstance(value, list | tuple):
        return [_scrub_field(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return withheld(value)
    return value


def _final_secret_pass(renderer: Callable[..., Any]) -> Processor:
    """Mask registered secrets in the rendered line itself: catches reprs of arbitrary objects."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> Any:
        line = renderer(logger, name, event_dict)
        return scrub_string(line) if isinstance(line, str) else line

    return render


def _pre_chain() -> list[Processor]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_context,
    ]


def _ensure_structlog() -> None:
    """structlog's side never changes between configurations (context is read per call),
    so loggers cached before ``configure_logging`` stay valid after it."""
    global _structlog_configured
    if _structlog_configured:
        return
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_pre_chain(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    _structlog_configured = True


def _formatter(use_json: bool, colors: bool) -> structlog.stdlib.ProcessorFormatter:
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        # Machines get every key on every line, so a field is always there to select on.
        shape: list[Processor] = []
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        # People get what is set: no "correlation_id=None document_id=None" on every line,
        # and no id lists (a group's members), which fill a terminal and which the JSON
        # lines keep for the machines that select on them.
        shape = [_drop_unset, _drop_id_lists]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_pre_chain(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become a plain string first so the scrubber sees them.
            structlog.processors.format_exc_info,
            _guard_and_scrub,
            *shape,
            _final_secret_pass(renderer),
        ],
    )


def _drop_unset(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {k: v for k, v in event_dict.items() if v is not None}


_ID_LISTS = ("document_ids", "correlation_ids")


def _drop_id_lists(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in _ID_LISTS:
        event_dict.pop(key, None)
    return event_dict


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value


def configure_logging(
    role: str,
    slot: int | None = None,
    *,
    json: bool | None = None,
    level: str | int = "INFO",
    stream: IO[str] | None = None,
    log_file: str | Path | None = None,
) -> None:
    """(Re)configure logging for this process. Call first thing in every process,
    and again in each child right after ``fork``.

    ``json``: None means JSON unless the output is a terminal. ``log_file``: write to
    that file (always JSON, reopened by ``reopen_log_files``) instead of ``stream``
    (default ``sys.stderr``); giving both is an error.
    """
    if log_file is not None and stream is not None:
        raise ValueError("configure_logging: give either stream or log_file, not both")
    level_no = _level(level)
    context.set_process(role, slot)
    _ensure_structlog()

    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(os.fspath(log_file), mode="a", encoding="utf-8")
        handler.setFormatter(_formatter(use_json=True if json is None else json, colors=False))
    else:
        out = (_console or sys.stderr) if stream is None else stream
        tty = _isatty(out)
        handler = logging.StreamHandler(out)
        handler.setFormatter(_formatter(use_json=(not tty) if json is None else json, colors=tty))

    root = logging.getLogger()
    for old in _installed_handlers:
        root.removeHandler(old)
        # In a forked child this closes the child's copy of an inherited file only.
        old.close()
    _installed_handlers[:] = [handler]
    root.addHandler(handler)
    root.setLevel(level_no)
    # The embedded server's own INFO lines (raw pg_ctl argument lists, "waiting for
    # server to start") are ingestd's business only when debugging.
    for chatty in _CHATTY_LIBRARIES:
        quiet = level_no if level_no <= logging.DEBUG else max(level_no, logging.WARNING)
        logging.getLogger(chatty).setLevel(quiet)
    logging.captureWarnings(True)


def redirect_console(stream: IO[str] | None) -> None:
    """Send the lines meant for the terminal to ``stream`` (``ingestd run``'s live view,
    which prints them above its panel), now and after any reconfiguration; None: back to
    ``sys.stderr``. A forked child never inherits it (its stderr is its own business)."""
    global _console
    _console = stream
    for handler in _installed_handlers:
        if type(handler) is logging.StreamHandler:
            _point(handler, stream or sys.stderr)


def _point(handler: logging.StreamHandler[Any], stream: IO[str]) -> None:
    try:
        handler.setStream(stream)
    except ValueError:
        # setStream flushes the stream it replaces; one already closed (a terminal that
        # went away, a test's captured stderr) has nothing left to flush.
        handler.acquire()
        try:
            handler.stream = stream
        finally:
            handler.release()


os.register_at_fork(after_in_child=lambda: redirect_console(None))


def reopen_log_files() -> int:
    """Reopen the log file (after logrotate moved it); returns how many were reopened.

    Call it from the event loop or main loop on SIGUSR1 (``loop.add_signal_handler``),
    not from inside a raw signal handler, which could interrupt a write in progress.
    """
    reopened = 0
    for handler in _installed_handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened += 1
    return reopened


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    _ensure_structlog()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name, **initial)
    return logger
