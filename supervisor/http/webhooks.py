"""``POST /v1/webhooks/llamaparse``: LlamaParse's signed completion callback.

The endpoint faces the internet, so every delivery is checked, in this order, before
anything is believed or written:

| check                                                    | refused with                  |
|----------------------------------------------------------|-------------------------------|
| ``LC-Signature`` header present                          | 401                           |
| body at most ``MAX_BODY_BYTES`` (read with that cap:     | 413                           |
|   a 50 MB body is never held in memory)                  |                               |
| HMAC-SHA256 of the raw bytes matches (constant time)     | 401                           |
| body is a v2 event: JSON object with ``event_type``,     | 400                           |
|   numeric ``timestamp``, ``data.job_id``                 |                               |
| ``timestamp`` within ``webhook_max_age_seconds`` (and at | 401: a stale delivery is      |
|   most a minute ahead)                                   |   treated like a bad signature|
|                                                          |   (Stripe-style tolerance):   |
|                                                          |   it proves nothing now       |

Then, for ``parse.success`` / ``parse.error`` (other event types: 200 ``ignored``):

| situation                                                | answer                          |
|----------------------------------------------------------|---------------------------------|
| this exact delivery (same signature) already applied     | 200 ``duplicate``, no change    |
| no document has this job id                              | 404 (the sender retries: our    |
|                                                          |   own commit may not be visible |
|                                                          |   yet; a job we replaced stays  |
|                                                          |   unknown)                      |
| the document is in ``parsing`` (a worker is polling the  | 409, no change: retried later,  |
|   job right now)                                         |   it is settled by then         |
| the document is past waiting (parsed, complete, failed…) | 200 ``already_handled``, no     |
|                                                          |   change                        |
| success, but the result cannot be fetched now            | 503, no change (the sender      |
|                                                          |   retries; the worker polls at  |
|                                                          |   the deadline anyway)          |
| success                                                  | 200 ``applied``: text stored,   |
|                                                          |   delivery recorded, awaiting_  |
|                                                          |   parse → parsed, one transaction|
| error                                                    | 200 ``applied``: → failed       |
|                                                          |   (invalid_input), or a retry   |
|                                                          |   (transient reason; see        |
|                                                          |   shared.db.webhooks)           |

A stale replay of an applied delivery is refused as stale (401) before the replay
record is consulted; a fresh identical duplicate is a no-op. Neither the secret, the
signature, the body nor the markdown is ever logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from aiohttp import web

from ingestd.shared.db import webhooks as sql
from ingestd.shared.db.webhooks import Applied, JobDocument
from ingestd.shared.errors import ErrorClass, IngestError, InvalidInput
from ingestd.shared.llamaparse import SIGNATURE_HEADER, WEBHOOK_EVENTS, is_fresh, sign, verify
from ingestd.shared.llamaparse.setup import classify_job_failure
from ingestd.shared.resilience.classify import safe_message
from ingestd.shared.states import Status
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger
from ingestd.supervisor.http.state import STATE, HttpState, error_response, json_response

log = get_logger("ingestd.http.webhooks")

MAX_BODY_BYTES = 1 << 20
READ_PIECE = 64 * 1024
EVENT_SUCCESS, EVENT_ERROR = "parse.success", "parse.error"
# Metric service segment for deliveries we receive (``api.llamaparse.*`` is our calls to it).
METRIC_SERVICE = "llamaparse_webhook"
# Is-fresh allows a minute of clock skew ahead; a replay record older than this can only
# match a delivery that is refused as stale anyway.
_SKEW_SECONDS = 60.0


@dataclass(frozen=True)
class WebhookEvent:
    event_id: str | None
    event_type: str
    timestamp: float
    job_id: str
    error_message: str | None


class BadEvent(ValueError):
    pass


def parse_event(body: bytes) -> WebhookEvent:
    try:
        # orjson, not json: it refuses nesting past 1,024 levels with a decode error,
        # where json.loads recursed into a RecursionError (a 500) on 300k nested arrays.
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadEvent("body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadEvent("body is not a JSON object")
    event_type = payload.get("event_type")
    stamp = payload.get("timestamp")
    data = payload.get("data")
    event_id = payload.get("event_id")
    if not isinstance(event_type, str) or not event_type:
        raise BadEvent("event_type missing")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise BadEvent("timestamp missing or not a number")
    if not isinstance(data, dict):
        raise BadEvent("data missing")
    job_id = data.get("job_id")
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise BadEvent("data.job_id missing")
    message = data.get("error_message")
    return WebhookEvent(
        event_id=event_id if isinstance(event_id, str) else None,
        event_type=event_type,
        timestamp=float(stamp),
        job_id=job_id,
        error_message=safe_message(message) if isinstance(message, str) else None,
    )


async def _read_capped(request: web.Request, cap: int) -> bytes | None:
    """The raw body, or None as soon as it passes ``cap`` bytes (the rest is not kept)."""
    buf = bytearray()
    async for piece in request.content.iter_chunked(READ_PIECE):
        buf += piece
        if len(buf) > cap:
            return None
    return bytes(buf)


async def llamaparse_webhook(request: web.Request) -> web.Response:
    state = request.app[STATE]
    started = time.perf_counter()
    response = await _handle(request, state)
    state.metrics.incr(f"api.{METRIC_SERVICE}.status.{response.status}")
    state.metrics.timing(f"api.{METRIC_SERVICE}.latency", (time.perf_counter() - started) * 1000)
    return response


def _too_large() -> web.Response:
    response = _refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
    # Close instead of reading and discarding the rest of a huge body.
    response.force_close()
    return response


def _refuse(status: int, reason: str) -> web.Response:
    log.warning("webhook delivery refused", status=status, reason=reason)
    return error_response(status, reason)


async def _handle(request: web.Request, state: HttpState) -> web.Response:
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        return _refuse(401, f"missing {SIGNATURE_HEADER} header")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _too_large()
    body = await _read_capped(request, MAX_BODY_BYTES)
    if body is None:
        return _too_large()
    if not verify(body, header, state.webhook_secret):
        return _refuse(401, "invalid signature")
    try:
        event = parse_event(body)
    except BadEvent as exc:
        return _refuse(400, f"not a LlamaParse event: {exc}")
    max_age = state.settings.webhook_max_age_seconds
    if not is_fresh(event.timestamp, time.time(), max_age, max_skew_s=_SKEW_SECONDS):
        return _refuse(401, f"stale delivery: timestamp outside the {max_age}s window")
    if event.event_type not in WEBHOOK_EVENTS:
        log.info("webhook event ignored", event_type=event.event_type, job_id=event.job_id)
        return json_response({"result": "ignored"})
    # Our own computation over the verified bytes: one canonical replay key per delivery,
    # whatever case or extra signatures the header carried.
    signature = sign(body, state.webhook_secret)
    seen, doc = await state.db(_lookup, signature, event.job_id)
    if seen:
        log.info("duplicate webhook delivery", job_id=event.job_id)
        return json_response({"result": "duplicate"})
    if doc is None:
        return _refuse(404, "unknown job")
    with context.bind_document(doc.id, doc.correlation_id):
        early = _not_waiting(doc, event)
        if early is not None:
            return early
        if event.event_type == EVENT_SUCCESS:
            return await _success(state, event, doc, signature)
        error = classify_job_failure(event.job_id, event.error_message)
        return await _failure(state, event, doc, signature, error)


def _lookup(
    conn: psycopg.Connection[Any], signature: str, job_id: str
) -> tuple[bool, JobDocument | None]:
    if sql.delivery_recorded(conn, signature):
        return True, None
    return False, sql.document_for_job(conn, job_id)


def _not_waiting(doc: JobDocument, event: WebhookEvent) -> web.Response | None:
    if doc.status is Status.PARSING:
        return _refuse(409, "a worker is polling this job right now; retry later")
    if doc.status is not Status.AWAITING_PARSE:
        log.info(
            "webhook for a document no longer waiting",
            job_id=event.job_id,
            event_type=event.event_type,
            document_status=str(doc.status),
        )
        return json_response({"result": "already_handled", "status": str(doc.status)})
    return None


async def _success(
    state: HttpState, event: WebhookEvent, doc: JobDocument, signature: str
) -> web.Response:
    try:
        markdown = await state.llamaparse().fetch_markdown(
            event.job_id, correlation_id=str(doc.correlation_id)
        )
    except IngestError as err:
        if err.error_class is ErrorClass.INVALID_INPUT:
            return await _failure(state, event, doc, signature, err)
        log.warning(
            "cannot fetch the parse result now",
            job_id=event.job_id,
            error_class=str(err.error_class),
            message=err.message,
        )
        return error_response(503, f"cannot fetch the parse result now ({err.error_class})")
    if not markdown.strip():
        empty = InvalidInput(f"llamaparse: job {event.job_id} extracted no text from the document")
        return await _failure(state, event, doc, signature, empty)
    outcome, written = await state.db(
        _apply_result, doc.id, event.job_id, markdown, signature, _prune_age(state)
    )
    del markdown
    if outcome is not Applied.APPLIED:
        return await _settled(state, outcome, event)
    assert written is not None
    log.info(
        "parse result applied from webhook",
        job_id=event.job_id,
        segments=written.segments,
        chars=written.chars,
    )
    return json_response(
        {"result": "applied", "document_id": str(doc.id), "status": str(Status.PARSED)}
    )


def _apply_result(
    conn: psycopg.Connection[Any],
    doc_id: Any,
    job_id: str,
    markdown: str,
    signature: str,
    prune_age: float,
) -> tuple[Applied, sql.Written | None]:
    sql.prune_deliveries(conn, older_than_seconds=prune_age)
    return sql.apply_result(
        conn,
        doc_id,
        job_id=job_id,
        markdown=markdown,
        pages=None,
        signature=signature,
        via="webhook",
    )


async def _failure(
    state: HttpState, event: WebhookEvent, doc: JobDocument, signature: str, error: IngestError
) -> web.Response:
    s = state.settings
    outcome = await state.db(
        sql.apply_failure,
        doc.id,
        job_id=event.job_id,
        error=error,
        signature=signature,
        via="webhook",
        max_attempts=s.max_attempts,
        retry_base=s.retry_base_seconds,
        retry_cap=s.retry_max_seconds,
    )
    if outcome.applied is not Applied.APPLIED:
        return await _settled(state, outcome.applied, event)
    cls = str(error.error_class)
    if outcome.status is Status.FAILED:
        state.metrics.incr(f"documents.failed.{Status.PARSING}.{cls}")
    elif outcome.status is Status.DEAD:
        state.metrics.incr(f"documents.dead.{cls}")
    else:
        state.metrics.incr(f"documents.retried.{Status.PARSING}.{cls}")
    log.warning(
        "parse failure applied from webhook",
        job_id=event.job_id,
        error_class=cls,
        message=error.message,
        to_status=str(outcome.status),
    )
    return json_response(
        {"result": "applied", "document_id": str(doc.id), "status": str(outcome.status)}
    )


async def _settled(state: HttpState, outcome: Applied, event: WebhookEvent) -> web.Response:
    """Someone else got there between our lookup and our transaction."""
    if outcome is Applied.DUPLICATE:
        return json_response({"result": "duplicate"})
    now = await state.db(sql.document_for_job, event.job_id)
    if now is None:
        return json_response({"result": "already_handled"})
    return _not_waiting(now, event) or _refuse(409, "document state changed; retry later")


def _prune_age(state: HttpState) -> float:
    return 2 * state.settings.webhook_max_age_seconds + 2 * _SKEW_SECONDS
