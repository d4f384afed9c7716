"""``/v1/documents``: the listing, one document, its retry and its deletion.

| route                               | answers                                              |
|-------------------------------------|------------------------------------------------------|
| GET    /v1/documents                | 200 a page: {"documents", "next_cursor", "next"};    |
|                                     | 400 for a bad status, limit or cursor                |
| GET    /v1/documents/{id}           | 200 {"document", "events"} (= show --json); 404      |
| POST   /v1/documents/{id}/retry     | 200 requeued (failed or dead only); 404; 409 other   |
|                                     | statuses                                             |
| DELETE /v1/documents/{id}           | 200 deleted with its chunks, segments, events and    |
|                                     | bytes (= ingestd delete); 404                        |

``{id}`` is a full id or an unambiguous hex prefix of one, as the CLI takes.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
import psycopg
from aiohttp import web

from ingestd.shared.db import jobs, reports
from ingestd.shared.states import Status
from ingestd.supervisor.http.state import STATE, error_response, json_response

DEFAULT_PAGE = 50
MAX_PAGE = 500
_ID_OR_PREFIX = re.compile(r"[0-9a-fA-F-]{8,36}")
_RETRYABLE = frozenset({Status.FAILED, Status.DEAD})


class BadQuery(ValueError):
    pass


# -- the listing -----------------------------------------------------------------------------


def encode_cursor(created_at: datetime, doc_id: uuid.UUID) -> str:
    """Opaque to clients: where the last page ended."""
    raw = orjson.dumps([created_at.isoformat(), str(doc_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, doc_id = orjson.loads(raw)
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return at, uuid.UUID(doc_id)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
        raise BadQuery("cursor is not one this server gave out") from None


def page_query(query: Any) -> tuple[int, Status | None, tuple[datetime, uuid.UUID] | None]:
    raw_limit = query.get("limit", str(DEFAULT_PAGE))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_PAGE}")
    status = None
    if "status" in query:
        try:
            status = Status(query["status"])
        except ValueError:
            known = ", ".join(str(s) for s in Status)
            raise BadQuery(f"status must be one of: {known}") from None
    after = decode_cursor(query["cursor"]) if "cursor" in query else None
    return int(raw_limit), status, after


async def list_documents(request: web.Request) -> web.Response:
    try:
        limit, status, after = page_query(request.query)
    except BadQuery as exc:
        return error_response(400, str(exc))
    # One more than asked: whether a next page exists, without a second query.
    rows = await request.app[STATE].db(
        reports.documents_page, limit=limit + 1, status=status, after=after
    )
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
    next_link = None
    if next_cursor is not None:
        params = {"limit": str(limit), "cursor": next_cursor}
        if status is not None:
            params["status"] = str(status)
        next_link = f"{request.path}?{urlencode(params)}"
    response = json_response({"documents": page, "next_cursor": next_cursor, "next": next_link})
    if next_link is not None:
        response.headers["Link"] = f'<{next_link}>; rel="next"'
    return response


# -- one document ----------------------------------------------------------------------------


def _not_found(ref: str) -> web.Response:
    return error_response(404, "no such document", document_id=ref[:64])


async def _resolve(request: web.Request) -> uuid.UUID | None:
    ref = request.match_info["document_id"]
    # A full id or a hex prefix (as ``ingestd show`` takes); never a LIKE pattern.
    if not _ID_OR_PREFIX.fullmatch(ref):
        return None
    return await request.app[STATE].db(reports.find_document_id, ref)


async def document(request: web.Request) -> web.Response:
    doc_id = await _resolve(request)
    found = None if doc_id is None else await request.app[STATE].db(_document_and_events, doc_id)
    if found is None:
        return _not_found(request.match_info["document_id"])
    return json_response(found)


def _document_and_events(conn: psycopg.Connection[Any], doc_id: uuid.UUID) -> dict[str, Any] | None:
    doc = reports.document(conn, doc_id)
    if doc is None:
        return None
    return {"document": doc, "events": reports.events(conn, doc_id)}


async def retry(request: web.Request) -> web.Response:
    doc_id = await _resolve(request)
    if doc_id is None:
        return _not_found(request.match_info["document_id"])
    status, requeued = await request.app[STATE].db(_retry, doc_id)
    if status is None:
        return _not_found(request.match_info["document_id"])
    if not requeued:
        return error_response(
            409,
            f"only failed or dead documents can be retried; this one is {status}",
            document_id=str(doc_id),
            document_status=str(status),
        )
    return json_response({"document_id": str(doc_id), "status": str(Status.QUEUED)})


def _retry(conn: psycopg.Connection[Any], doc_id: uuid.UUID) -> tuple[Status | None, bool]:
    status = reports.status_of(conn, doc_id)
    if status not in _RETRYABLE:
        return status, False
    # Requeues only a failed or dead document, in one statement: a racing retry finds 0.
    if jobs.requeue_failed(conn, [doc_id]) == 1:
        return status, True
    return reports.status_of(conn, doc_id), False


async def delete(request: web.Request) -> web.Response:
    doc_id = await _resolve(request)
    deleted = doc_id is not None and await request.app[STATE].db(jobs.delete_document, doc_id)
    if not deleted:
        return _not_found(request.match_info["document_id"])
    return json_response({"document_id": str(doc_id), "deleted": True})
