"""Liveness, readiness and status: read-only views of the database.

``/v1/status`` runs the very function behind ``ingestd status --json`` and serialises with
the same encoder, so the CLI and HTTP say the same thing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout

from ingestd.shared.db import supervisors
from ingestd.shared.db.migrate import current_version, latest_version
from ingestd.supervisor.http.state import STATE, error_response, json_response
from ingestd.supervisor.status import gather_status

# Readiness is probed often and must answer quickly, even with the database gone.
READY_DB_WAIT_SECONDS = 2.0


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        verdict = await state.db(
            readiness,
            heartbeat_timeout=state.settings.heartbeat_timeout_seconds,
            pool_wait=READY_DB_WAIT_SECONDS,
        )
    except (PoolTimeout, psycopg.OperationalError):
        verdict = {"ready": False, "reason": "database unreachable"}
    if verdict.pop("ready"):
        return json_response({"status": "ready", **verdict})
    # Not ready is an error like any other: a problem, the verdict's fields as members.
    reason = verdict.pop("reason")
    return error_response(503, f"not ready: {reason}", reason=reason, **verdict)


def readiness(conn: psycopg.Connection[Any], *, heartbeat_timeout: float) -> dict[str, Any]:
    """Ready: the schema is the one this code needs, and some worker is alive to do work."""
    have, need = current_version(conn), latest_version()
    if have != need:
        return {
            "ready": False,
            "reason": f"database schema is at version {have}, this ingestd needs {need}"
            " (run: ingestd db migrate)",
            "schema_version": have,
        }
    fresh = supervisors.workers_alive(conn, within_seconds=heartbeat_timeout)
    if fresh == 0:
        return {
            "ready": False,
            "reason": f"no worker heartbeat in the last {heartbeat_timeout:g}s",
            "schema_version": have,
            "workers_alive": 0,
        }
    return {"ready": True, "schema_version": have, "workers_alive": fresh}


async def status(request: web.Request) -> web.Response:
    body = await request.app[STATE].db(gather_status)
    return json_response(body)
