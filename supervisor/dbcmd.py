"""``ingestd db …``: the database at hand.

``migrate`` and ``url`` work on whichever database is in use; ``shell`` opens psql on
it; ``start``, ``stop`` and ``status`` manage the embedded server (see
``shared.db.embedded``), which otherwise runs only while an ingestd process uses it.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from ingestd.shared.db import embedded
from ingestd.shared.errors import ConfigError
from ingestd.shared.jsonout import dumps
from ingestd.shared.settings import Settings
from ingestd.supervisor.terminal import printable

EMBEDDED_ONLY = (
    "the database in use is INGESTD_DATABASE_URL (or DATABASE_URL), not the embedded "
    "server; `ingestd db {command}` manages only the embedded one"
)


def add_arguments(
    db: argparse.ArgumentParser,
    subcommand: Callable[[Any, str, str], argparse.ArgumentParser],
) -> None:
    """The ``db`` subcommands, on the ``db`` parser; ``subcommand`` makes each one take
    the global options too (the CLI's own rule, passed in: the CLI imports this module)."""
    sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return subcommand(sub, name, help_)

    add("migrate", "apply the database migrations")
    add("url", "print the connection URL of the database in use")
    sp = add(
        "shell",
        "open psql on the database in use (the embedded server stays up while it is open)",
    )
    sp.add_argument(
        "-c",
        "--command",
        dest="sql",
        action="append",
        default=[],
        metavar="SQL",
        help="run SQL and exit (repeatable), as psql -c",
    )
    sp.add_argument(
        "psql_args",
        nargs=argparse.REMAINDER,
        metavar="-- PSQL_ARGS",
        help="further arguments for psql, after --",
    )
    add("start", "start the embedded server and keep it running until `ingestd db stop`")
    sp = add("stop", "stop the embedded server (refused while ingestd processes use it)")
    sp.add_argument(
        "--force", action="store_true", help="stop it even while other processes use it"
    )
    sp = add(
        "status",
        "the embedded server: running or not, pid, data dir, URL, users (exit 1: not running)",
    )
    sp.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    command: str = args.db_command
    if command == "migrate":
        return _migrate(settings)
    if command == "url":
        return _url(settings)
    if command == "shell":
        return _shell(settings, args.sql, _psql_args(args.psql_args))
    if command == "status":
        return _status(settings, as_json=args.json)
    if settings.database_url:
        raise ConfigError(EMBEDDED_ONLY.format(command=command))
    if command == "start":
        return _start(settings.home)
    return _stop(settings.home, force=args.force)


def _database_url(settings: Settings) -> str:
    from ingestd.shared.db.connect import database_url

    return database_url(settings)


def _migrate(settings: Settings) -> int:
    from ingestd.shared.db.migrate import migrate

    applied = migrate(_database_url(settings))
    print(f"applied migrations: {applied}" if applied else "database schema is current")
    return 0


def _url(settings: Settings) -> int:
    url = _database_url(settings)
    print(url, flush=True)
    if not settings.database_url:
        # stdout stays the bare URL for scripts; the caveat goes to stderr.
        if embedded.status(settings.home).kept:
            note = "the embedded server is kept running (`ingestd db stop` stops it)"
        else:
            note = (
                "this URL works only while the embedded server runs, and it stops when the "
                "last ingestd process using it exits: keep it running with `ingestd db start` "
                "(or open psql with `ingestd db shell`)"
            )
        print(f"ingestd: {note}", file=sys.stderr)
    return 0


# -- shell ---------------------------------------------------------------------------


def _psql_args(rest: list[str]) -> list[str]:
    return rest[1:] if rest[:1] == ["--"] else rest


def find_psql(embedded_server: bool) -> Path:
    """The embedded server's own psql first (its version matches), else psql on PATH;
    for another server, the reverse."""
    on_path = shutil.which("psql")
    candidates = [embedded.bundled_psql(), on_path and Path(on_path)]
    if not embedded_server:
        candidates.reverse()
    for candidate in candidates:
        if candidate:
            return candidate
    raise ConfigError(
        "no psql found: install the PostgreSQL client (e.g. `apt install postgresql-client`)"
    )


def _shell(settings: Settings, commands: list[str], psql_args: list[str]) -> int:
    url = _database_url(settings)  # joins (and so holds up) the embedded server
    psql = find_psql(embedded_server=not settings.database_url)
    argv = [str(psql), url, *(a for sql in commands for a in ("-c", sql)), *psql_args]
    return run_in_foreground(argv)


def run_in_foreground(argv: list[str]) -> int:
    """Run an interactive child and return its exit status (128 + signal if killed).

    While it runs, Ctrl-C belongs to the child (psql cancels the query), and a SIGTERM
    or SIGHUP sent to us is passed on to it; we leave when it does, so the server we
    hold stays up exactly as long as the shell. Python-level handlers, not SIG_IGN:
    handlers reset to the default in the child on exec, an ignored signal would not.
    """
    proc = subprocess.Popen(argv)

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)

    passed_on = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *passed_on)}
    signal.signal(signal.SIGINT, lambda *_: None)
    for sig in passed_on:
        signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code


# -- the embedded server ---------------------------------------------------------------


def _start(home: Path) -> int:
    state = embedded.keep(home)
    print(f"the embedded PostgreSQL is running (pid {state.pid}) and kept running")
    print(f"  url: {state.url}")
    print("  stop it with `ingestd db stop`")
    return 0


def _stop(home: Path, *, force: bool) -> int:
    try:
        stopped, users = embedded.stop(home, force=force)
    except embedded.ServerInUse as exc:
        print(
            f"ingestd: the embedded PostgreSQL is in use by {printable(str(exc))}; "
            "stop that first, or use `ingestd db stop --force` to end its sessions",
            file=sys.stderr,
        )
        return 1
    except embedded.StopFailed as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return 1
    if not stopped:
        print("the embedded PostgreSQL is not running")
    elif users:
        print(
            "stopped the embedded PostgreSQL; sessions of "
            + printable(", ".join(u.describe() for u in users))
            + " were ended"
        )
    else:
        print("stopped the embedded PostgreSQL")
    return 0


def _status(settings: Settings, *, as_json: bool) -> int:
    if settings.database_url:
        if as_json:
            print(dumps({"embedded": False, "running": None}))
        else:
            print("the database in use is INGESTD_DATABASE_URL (or DATABASE_URL), not embedded")
        return 0
    state = embedded.status(settings.home)
    if as_json:
        print(dumps(state.as_json()))
        return 0 if state.running else 1
    if state.running:
        kept = ", kept running (`ingestd db stop` stops it)" if state.kept else ""
        print(f"embedded PostgreSQL: running, pid {state.pid}{kept}")
    else:
        print("embedded PostgreSQL: not running")
    print(f"  data dir: {printable(state.data_dir)}")
    if state.url:
        print(f"  url:      {printable(state.url)}")
    live = [u for u in state.users if u.alive]
    print(f"  users:    {len(live) or 'none'}")
    for user in state.users:
        what = printable(user.command) if user.alive else "gone (dropped at the next join)"
        print(f"    pid {user.pid:<8} {what}")
    if state.reaper_pid is not None:
        print(f"  reaper:   pid {state.reaper_pid} (stops the server when no user is left)")
    return 0 if state.running else 1
