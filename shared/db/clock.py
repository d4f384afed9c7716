"""The database's clock: every process compares ``run_after`` and leases with the
server's ``now()``, never its own host's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg


def now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


def now_plus(conn: psycopg.Connection[Any], seconds: float) -> datetime:
    row = conn.execute("SELECT now() + make_interval(secs => %s) AS due", (seconds,)).fetchone()
    assert row is not None
    return row["due"]  # type: ignore[no-any-return]
