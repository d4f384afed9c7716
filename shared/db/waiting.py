"""Documents waiting on an unavailable service (``waiting_since``, set by the attempt-end
rule in ``shared.db.attempts``): what ``run --drain`` asks before it gives up on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ingestd.shared.states import TERMINAL, Status


@dataclass(frozen=True)
class Waiting:
    """The documents waiting on one service."""

    service: str
    documents: int
    longest_seconds: float  # the longest any of them has waited
    last_error: str | None  # the most recent error recorded on one of them


# What a --drain run waits for (as ``reports.outstanding_documents``): every non-terminal
# document but those parked in awaiting_parse until a later run_after.
_OUTSTANDING = (
    "NOT (status = ANY(%(terminal)s::document_status[]))"
    " AND NOT (status = %(parked)s AND run_after > now())"
)


def _params(**extra: Any) -> dict[str, Any]:
    return {"terminal": [str(s) for s in TERMINAL], "parked": str(Status.AWAITING_PARSE), **extra}


def blocked(conn: psycopg.Connection[Any], *, in_flight_grace: float) -> list[Waiting]:
    """The services the outstanding documents wait on, when every one of them waits;
    empty when any can still move (not waiting, or none outstanding).

    A waiting document is retried now and then, so it may be leased at the moment of the
    question: it still counts as waiting unless it has been in flight (since its claim,
    the last status change) for longer than ``in_flight_grace``, which a retry bounced
    by an open circuit never is; then its service answered and real work is going on."""
    row = conn.execute(
        "SELECT count(*) AS outstanding, count(*) FILTER (WHERE waiting_since IS NULL"
        "   OR (lease_owner IS NOT NULL"
        "       AND updated_at < now() - make_interval(secs => %(grace)s))) AS moving"
        f" FROM documents WHERE {_OUTSTANDING}",
        _params(grace=in_flight_grace),
    ).fetchone()
    if row is None or row["outstanding"] == 0 or row["moving"] > 0:
        return []
    return _by_service(conn, _OUTSTANDING, _params())


def waited_out_since(conn: psycopg.Connection[Any], since: datetime) -> list[Waiting]:
    """Documents that ended ``dead`` at the wait horizon since ``since``: only that ending
    leaves a dead document with its wait clock set (a counted attempt clears it)."""
    return _by_service(
        conn,
        "status = 'dead' AND waiting_since IS NOT NULL AND updated_at >= %(since)s",
        {"since": since},
    )


def _by_service(conn: psycopg.Connection[Any], where: str, params: dict[str, Any]) -> list[Waiting]:
    rows = conn.execute(
        "SELECT coalesce(waiting_for, 'unknown service') AS service, count(*) AS n,"
        " extract(epoch FROM now() - min(waiting_since))::float8 AS longest,"
        " (array_agg(error_message ORDER BY updated_at DESC))[1] AS last_error"
        f" FROM documents WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1",
        params,
    ).fetchall()
    return [
        Waiting(r["service"], int(r["n"]), float(r["longest"] or 0.0), r["last_error"])
        for r in rows
    ]
