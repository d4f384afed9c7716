"""Parse through LlamaParse: submit the document, park it, finish from the webhook or a poll.

A worker does not wait for the remote parser. It uploads the original bytes with a
signed webhook registration, then in one transaction records the job id and parks the
document in ``awaiting_parse`` with no lease and ``run_after`` set to the callback
deadline. The HTTP child's webhook (supervisor/http/webhooks.py) normally moves it on to
``parsed``. If the callback never comes, the deadline makes the document claimable
again (``awaiting_parse → parsing``) and this stage polls the job itself:

| the document has…                 | this stage                                             |
|-----------------------------------|--------------------------------------------------------|
| no job, a stored result for its   | fetches that finished job's text again (no new upload) |
|   content hash (parse_results)    |                                                        |
| no job                            | uploads, → awaiting_parse until the callback deadline  |
| a job, COMPLETED                  | fetches the markdown, → parsed                         |
| a job, still PENDING/RUNNING      | → awaiting_parse with a new deadline; past the overall |
|                                   |   job deadline, drops the job (transient: re-upload)   |
| a job, FAILED                     | drops the job; invalid_input (or transient, by reason) |
| a job, CANCELLED                  | drops the job; cancelled                               |
| a job the service no longer knows | drops the job; transient, so the retry re-uploads      |

Without ``public_url`` no webhook can reach us: jobs are submitted without one and
found by polling at each deadline (a documented mode, logged at submission).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from ingestd.shared.db import clock, webhooks
from ingestd.shared.db.blobs import open_blob
from ingestd.shared.errors import (
    ErrorClass,
    IngestError,
    InvalidInput,
    LeaseLost,
    TransientError,
)
from ingestd.shared.llamaparse import JobState, LlamaParseClient
from ingestd.shared.llamaparse.setup import (
    SERVICE,
    classify_job_failure,
    make_client,
    resolve_webhook_secret,
    webhook_url,
)
from ingestd.shared.states import Status
from ingestd.shared.telemetry.logs import get_logger
from ingestd.workers.context import StageContext
from ingestd.workers.loop import close_on_exit, worker_runner

T = TypeVar("T")

log = get_logger("ingestd.parse.llamaparse")

# A job that has not finished this long after submission is given up and submitted
# again. LlamaParse's own job timeout is 30 min + 5 min per page; this allows ~65 pages.
JOB_DEADLINE_SECONDS = 6 * 3600.0
# How often the worker heartbeats and renews its lease while a remote call is in flight
# (a 500 MB upload takes longer than the supervisor's heartbeat timeout).
KEEPALIVE_SECONDS = 1.0


# -- the stage ----------------------------------------------------------------------------


def run(ctx: StageContext) -> Status:
    job_id = ctx.doc.get("parse_job_id")
    if job_id is None:
        return _submit(ctx)
    return _poll(ctx, job_id)


def _submit(ctx: StageContext) -> Status:
    doc = ctx.doc
    client = _client(ctx)
    correlation_id = str(doc["correlation_id"])
    prior = webhooks.parse_result_for(ctx.conn, doc["content_sha256"])
    if prior is not None:
        try:
            markdown = _remote(
                ctx, lambda: client.fetch_markdown(prior.job_id, correlation_id=correlation_id)
            )
        except IngestError as err:
            if err.error_class.retryable or err.error_class in (ErrorClass.AUTH, ErrorClass.QUOTA):
                raise
            # The provider no longer has that job's result (they expire): parse afresh.
            log.info(
                "stored parse result unavailable; uploading again",
                job_id=prior.job_id,
                reason=err.message,
            )
            with ctx.conn.transaction():
                webhooks.forget_parse_result(ctx.conn, doc["content_sha256"])
        else:
            return _finish(ctx, prior.job_id, markdown, via="reuse")

    url = webhook_url(ctx.settings)
    secret = resolve_webhook_secret(ctx.settings) if url else None
    if url is None:
        log.warning(
            "public_url is not set: no webhook can reach ingestd; the job is polled "
            "at each deadline instead",
            deadline_seconds=_callback_timeout(ctx),
        )
    stream = open_blob(ctx.conn, doc["blob_oid"], doc["size_bytes"])
    job_id = _remote(
        ctx,
        lambda: client.upload(
            stream,
            doc["filename"],
            webhook_url=url,
            signing_secret=secret,
            correlation_id=correlation_id,
            content_type=doc["mime_type"],
        ),
    )
    with ctx.conn.transaction():
        due = _due(ctx, _callback_timeout(ctx))
        ctx.transition(
            Status.AWAITING_PARSE,
            fields={
                "parse_job_id": job_id,
                "parse_submitted_at": _now(ctx),
                "run_after": due,
                "parser": SERVICE,
            },
            details={"job_id": job_id, "webhook": url is not None},
        )
    log.info(
        "submitted to llamaparse; waiting for the callback", job_id=job_id, deadline=due.isoformat()
    )
    return Status.AWAITING_PARSE


def _poll(ctx: StageContext, job_id: str) -> Status:
    client = _client(ctx)
    correlation_id = str(ctx.doc["correlation_id"])
    try:
        status = _remote(ctx, lambda: client.status(job_id, correlation_id=correlation_id))
    except InvalidInput as err:
        # A 400/404 for our own job id: the service no longer knows the job.
        _drop_job(ctx)
        raise TransientError(
            f"llamaparse: job {job_id} is no longer available ({err.message}); "
            "the document will be uploaded again"
        ) from err
    if status.state is JobState.COMPLETED:
        try:
            markdown = _remote(
                ctx, lambda: client.fetch_markdown(job_id, correlation_id=correlation_id)
            )
        except InvalidInput:
            # Pages it could not parse: a retry (by an operator) submits afresh.
            _drop_job(ctx)
            raise
        return _finish(ctx, job_id, markdown, via="poll")
    if status.state is JobState.FAILED:
        _drop_job(ctx)
        raise classify_job_failure(job_id, status.error_message)
    if status.state is JobState.CANCELLED:
        _drop_job(ctx)
        raise IngestError(
            f"llamaparse: job {job_id} was cancelled", error_class=ErrorClass.CANCELLED
        )
    age = _job_age(ctx)
    limit = max(JOB_DEADLINE_SECONDS, 3 * _callback_timeout(ctx))
    if age is not None and age > limit:
        _drop_job(ctx)
        raise TransientError(
            f"llamaparse: job {job_id} still {status.state} after {age:.0f}s "
            f"(limit {limit:.0f}s); the document will be uploaded again"
        )
    with ctx.conn.transaction():
        due = _due(ctx, _callback_timeout(ctx))
        ctx.transition(
            Status.AWAITING_PARSE,
            fields={"run_after": due},
            details={"job_id": job_id, "state": str(status.state), "polled": True},
        )
    log.info(
        "llamaparse job not finished; waiting again",
        job_id=job_id,
        state=str(status.state),
        deadline=due.isoformat(),
    )
    return Status.AWAITING_PARSE


def _finish(ctx: StageContext, job_id: str, markdown: str, *, via: str) -> Status:
    if not markdown.strip():
        _drop_job(ctx)
        raise InvalidInput(f"llamaparse: job {job_id} extracted no text from the document")
    with ctx.conn.transaction():
        written = webhooks.write_markdown(ctx.conn, ctx.doc_id, markdown)
        webhooks.record_parse_result(
            ctx.conn, ctx.doc_id, job_id=job_id, written=written, pages=None
        )
        ctx.transition(
            Status.PARSED,
            fields={
                "parse_job_id": job_id,
                "parsed_segments": written.segments,
                "parsed_chars": written.chars,
                "parser": SERVICE,
            },
            details={
                "job_id": job_id,
                "via": via,
                "segments": written.segments,
                "chars": written.chars,
            },
        )
    return Status.PARSED


# -- plumbing -----------------------------------------------------------------------------


def _callback_timeout(ctx: StageContext) -> float:
    return ctx.settings.parse_callback_timeout_seconds


def _now(ctx: StageContext) -> datetime:
    return clock.now(ctx.conn)


def _due(ctx: StageContext, seconds: float) -> datetime:
    """The database's clock, not this host's: every worker compares run_after with now()."""
    return clock.now_plus(ctx.conn, seconds)


def _job_age(ctx: StageContext) -> float | None:
    return webhooks.job_age_seconds(ctx.conn, ctx.doc_id)


def _drop_job(ctx: StageContext) -> None:
    """Forget the document's job (under our lease) so the next attempt submits afresh."""
    if not webhooks.drop_job(ctx.conn, ctx.doc_id, ctx.owner):
        raise LeaseLost(f"document {ctx.doc_id} is no longer leased by {ctx.owner}")


_CLIENTS: dict[tuple[int, str, str], LlamaParseClient] = {}


def _client(ctx: StageContext) -> LlamaParseClient:
    """One client per worker process (and event loop): its breaker and upload pacing
    span documents, and its connections are reused."""
    runner = worker_runner()
    key_value = ctx.settings.llama_cloud_api_key
    key = (
        id(runner.get_loop()),
        key_value.get_secret_value() if key_value else "",
        ctx.settings.llama_cloud_base_url,
    )
    client = _CLIENTS.get(key)
    if client is None:
        for old_key, old in list(_CLIENTS.items()):
            del _CLIENTS[old_key]
            if old_key[0] == key[0]:  # same loop, other configuration: close its connections
                runner.run(old.aclose())
        client = _CLIENTS[key] = make_client(ctx.settings, ctx.metrics)
        close_on_exit(_close_clients)
    return client


async def _close_clients() -> None:
    clients = list(_CLIENTS.values())
    _CLIENTS.clear()
    for client in clients:
        await client.aclose()


def _remote(ctx: StageContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run one remote call on the worker's event loop, heartbeating and renewing the lease
    meanwhile; a lost lease cancels the call."""

    async def main() -> T:
        task = asyncio.ensure_future(call())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_SECONDS)
                if done:
                    return task.result()
                await asyncio.to_thread(ctx.checkpoint, stoppable=False)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    ctx.checkpoint()
    return worker_runner().run(main())
