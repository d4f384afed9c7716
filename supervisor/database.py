"""The supervisor's own database handle: one lazily opened connection, bounded so the
loop never waits on PostgreSQL for long, and error logging that does not flood.

The loop has children to watch: a connect, a statement, or a wait on a dead network
each gives up after seconds (libpq ignores the last for Unix sockets). The connection
is closed before every fork (a child must not inherit it) and after every error, and
reopened on next use. A failure that repeats (the database is down) is logged once per
``ERROR_LOG_SECONDS`` per activity, with how many were left out.

The supervisor owns the embedded server (when no INGESTD_DATABASE_URL is set): nothing
else would start it again once its postmaster is killed, and the workers would wait on
it for ever. So every database error first checks whether it is gone, and starts it.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from ingestd.shared.db import embedded
from ingestd.shared.db.connect import connect
from ingestd.shared.errors import first_line
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.logs import get_logger

APPLICATION_NAME = "ingestd-supervisor"
ERROR_LOG_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000
TCP_USER_TIMEOUT_MS = 10_000


class SupervisorDatabase:
    def __init__(self, url: str = "") -> None:
        self.url = url
        self.embedded_home: Path | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._logged_at: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._log = get_logger("ingestd.supervisor")

    def conn(self) -> psycopg.Connection[Any]:
        """The connection, opened now if closed."""
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def connect(self) -> psycopg.Connection[Any]:
        """A new bounded connection of its own (the caller closes it)."""
        return connect(bounded(self.url), autocommit=True, application_name=APPLICATION_NAME)

    def use(self, url: str, *, embedded_home: Path | None = None) -> None:
        """Switch to another database (a reload changed it); ``embedded_home``: the URL
        is the embedded server's under that home, which this process then restarts."""
        self.embedded_home = embedded_home
        if url != self.url:
            self.close()
            self.url = url

    def close(self) -> None:
        if self._conn is not None:
            # Closing a connection that already broke can fail too; it is gone either way.
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def error(self, what: str, exc: psycopg.Error) -> None:
        """Log (at most every ERROR_LOG_SECONDS per ``what``, with a count) and drop the
        connection, so the next use starts afresh."""
        self.close()
        self._report(what, first_line(exc))
        self.revive_embedded()

    def revive_embedded(self) -> int | None:
        """Start the embedded server again if its postmaster is gone; its new pid."""
        if self.embedded_home is None:
            return None
        try:
            pid = embedded.revive(self.embedded_home)
        except (subprocess.SubprocessError, OSError) as exc:
            # pg_ctl failed or timed out (its log says why): tried again on the next error.
            self._report("restarting the embedded server", first_line(exc))
            return None
        if pid is not None:
            self._log.warning("embedded postgres restarted", pid=pid)
        return pid

    def _report(self, what: str, error: str) -> None:
        now = time.monotonic()
        if now - self._logged_at.get(what, -ERROR_LOG_SECONDS) < ERROR_LOG_SECONDS:
            self._suppressed[what] += 1
            return
        self._log.error(
            "database error",
            during=what,
            error=error,
            similar_errors_since_last_report=self._suppressed.pop(what, 0),
        )
        self._logged_at[what] = now


def embedded_home(settings: Settings) -> Path | None:
    """The home whose embedded server this configuration uses; None with a database URL."""
    return None if settings.database_url else settings.home


def bounded(url: str) -> str:
    params: dict[str, Any] = conninfo.conninfo_to_dict(url)
    options = str(params.get("options") or "")
    params["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    params.setdefault("tcp_user_timeout", TCP_USER_TIMEOUT_MS)
    return conninfo.make_conninfo(**params)


def check_embedding_space(url: str, settings: Settings) -> None:
    """Refuse to start (or reload) with an embedder that cannot work or that does not
    match the vectors already stored: before any worker is forked, with a message that
    says what to set or install."""
    from ingestd.shared.db.space import ensure_space
    from ingestd.shared.embedders.setup import space_for

    wanted = space_for(settings)
    with connect(url, autocommit=True, application_name="ingestd-supervisor-check") as conn:
        ensure_space(conn, wanted)
