"""Liveness, readiness, status and one document: read-only views of the database.

``/v1/status`` and ``/v1/documents/{id}`` run the very functions behind ``ingestd status
--json`` and ``ingestd show --json`` and serialise with the same encoder, so the CLI and
HTTP say the same thing.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout

from ingestd.shared.db import reports, supervisors
from ingestd.shared.db.migrate import current_version, latest_version
from ingestd.supervisor.http.state import STATE, error_response, json_response
from ingestd.supervisor.status import gather_status

_ID_OR_PREFIX = re.compile(r"[0-9a-fA-F-]{8,36}")
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
    ready = verdict.pop("ready")
    body = {"status": "ready" if ready else "unavailable", **verdict}
    return json_response(body, status=200 if ready else 503)


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


async def document(request: web.Request) -> web.Response:
    ref = request.match_info["document_id"]
    # A full id or a hex prefix (as ``ingestd show`` takes); never a LIKE pattern.
    if not _ID_OR_PREFIX.fullmatch(ref):
        return error_response(404, "no such document", document_id=ref[:64])
    found = await request.app[STATE].db(_document_and_events, ref)
    if found is None:
        return error_response(404, "no such document", document_id=ref[:64])
    return json_response(found)


def _document_and_events(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any] | None:
    doc_id = reports.find_document_id(conn, ref)
    doc = reports.document(conn, doc_id) if doc_id else None
    if doc is None:
        return None
    return {"document": doc, "events": reports.events(conn, doc["id"])}
