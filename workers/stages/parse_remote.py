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
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from ingestd.shared.db import webhooks
from ingestd.shared.db.blobs import open_blob
from ingestd.shared.errors import (
    AuthError,
    ConfigError,
    ErrorClass,
    IngestError,
    InvalidInput,
    LeaseLost,
    TransientError,
)
from ingestd.shared.llamaparse import JobState, LlamaParseClient
from ingestd.shared.resilience import AttemptEvent
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.telemetry.scrub import register_secret
from ingestd.workers.context import StageContext

T = TypeVar("T")

log = get_logger("ingestd.parse.llamaparse")

SERVICE = "llamaparse"
WEBHOOK_PATH = "/v1/webhooks/llamaparse"
SECRET_FILE = "webhook_secret"
MIN_SECRET_CHARS = 16
# A job that has not finished this long after submission is given up and submitted
# again. LlamaParse's own job timeout is 30 min + 5 min per page; this allows ~65 pages.
JOB_DEADLINE_SECONDS = 6 * 3600.0
# How often the worker heartbeats and renews its lease while a remote call is in flight
# (a 500 MB upload takes longer than the supervisor's heartbeat timeout).
KEEPALIVE_SECONDS = 1.0


# -- configuration ----------------------------------------------------------------------


def webhook_url(settings: Settings) -> str | None:
    if not settings.public_url:
        return None
    return settings.public_url.rstrip("/") + WEBHOOK_PATH


def resolve_webhook_secret(settings: Settings) -> str:
    """The webhook signing secret: ``webhook_secret`` when configured, else a secret
    generated once per deployment and kept in ``INGESTD_HOME/webhook_secret`` (mode 0600),
    so every worker and the HTTP child of every restart agree on it."""
    if settings.webhook_secret is not None:
        value = settings.webhook_secret.get_secret_value()
        if len(value.strip()) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"webhook_secret (INGESTD_WEBHOOK_SECRET) must be at least {MIN_SECRET_CHARS}"
                " characters: it is the key that proves a webhook came from LlamaParse"
            )
        register_secret(value)
        return value
    path = settings.home / SECRET_FILE
    value = _read_secret_file(path)
    if value is None:
        value = _create_secret_file(path)
    register_secret(value)
    return value


def _read_secret_file(path: os.PathLike[str]) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the webhook secret file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"the webhook secret file {path} is readable by others "
                f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
            )
        value = fh.read().strip()
    if not value:
        raise ConfigError(f"the webhook secret file {path} is empty; delete it to regenerate")
    return value


def _create_secret_file(path: Any) -> str:
    """Write a new secret without ever exposing a partial file: a private temporary file,
    then ``link`` (atomic, refuses to overwrite). Whoever links first wins; the others
    read the winner's secret."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_secret_file(path)
            if existing is None:
                raise ConfigError(f"the webhook secret file {path} vanished while read") from None
            return existing
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return value


def attempt_metrics(metrics: Metrics) -> Callable[[AttemptEvent], None]:
    """``api.llamaparse.*`` metrics from the client's per-attempt events."""

    def on_event(event: AttemptEvent) -> None:
        if event.attempt > 0:
            metrics.timing(f"api.{SERVICE}.latency", event.elapsed * 1000.0)
        if event.outcome == "retry":
            metrics.incr(f"api.{SERVICE}.retries")
        cls = event.error_class
        status = event.error.http_status if event.error is not None else None
        if event.outcome == "success":
            metrics.incr(f"api.{SERVICE}.status.200")
        elif status is not None:
            metrics.incr(f"api.{SERVICE}.status.{status}")
        if cls is ErrorClass.RATE_LIMITED:
            metrics.incr(f"api.{SERVICE}.rate_limited")
        elif cls is not None and event.outcome != "rejected" and (status is None or status < 400):
            # No usable response: timeout, dropped connection, malformed reply.
            metrics.incr(f"api.{SERVICE}.errors.{cls}")

    return on_event


def make_client(settings: Settings, metrics: Metrics) -> LlamaParseClient:
    if settings.llama_cloud_api_key is None:
        raise AuthError(
            "parser=llamaparse needs a LlamaCloud API key (LLAMA_CLOUD_API_KEY); none is set"
        )
    key = settings.llama_cloud_api_key.get_secret_value()
    register_secret(key)
    return LlamaParseClient(key, settings.llama_cloud_base_url, on_event=attempt_metrics(metrics))


_TRANSIENT_REASON = re.compile(
    r"(?i)\b(time(?:d)?\s*out|timeout|temporar\w*|try again|internal (?:server )?error|"
    r"unavailable|overload\w*|rate limit\w*|too many requests)\b"
)


def classify_job_failure(job_id: str, message: str | None) -> IngestError:
    """A FAILED job: the document's fault unless the reason says the service's."""
    reason = f": {message}" if message else ""
    if message and _TRANSIENT_REASON.search(message):
        return TransientError(f"llamaparse: job {job_id} failed{reason}")
    return InvalidInput(f"llamaparse: job {job_id} failed{reason}")


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
    row = ctx.conn.execute("SELECT now() AS now").fetchone()
    assert row is not None
    return row["now"]  # type: ignore[no-any-return]


def _due(ctx: StageContext, seconds: float) -> datetime:
    """The database's clock, not this host's: every worker compares run_after with now()."""
    row = ctx.conn.execute("SELECT now() + make_interval(secs => %s) AS due", (seconds,)).fetchone()
    assert row is not None
    return row["due"]  # type: ignore[no-any-return]


def _job_age(ctx: StageContext) -> float | None:
    row = ctx.conn.execute(
        "SELECT extract(epoch FROM now() - parse_submitted_at) AS age FROM documents WHERE id = %s",
        (ctx.doc_id,),
    ).fetchone()
    if row is None or row["age"] is None:
        return None
    return float(row["age"])


def _drop_job(ctx: StageContext) -> None:
    """Forget the document's job (under our lease) so the next attempt submits afresh."""
    with ctx.conn.transaction():
        cur = ctx.conn.execute(
            "UPDATE documents SET parse_job_id = NULL, parse_submitted_at = NULL"
            " WHERE id = %s AND lease_owner = %s",
            (ctx.doc_id, ctx.owner),
        )
    if cur.rowcount == 0:
        raise LeaseLost(f"document {ctx.doc_id} is no longer leased by {ctx.owner}")


_CLIENTS: dict[tuple[int, str, str], LlamaParseClient] = {}


def _client(ctx: StageContext) -> LlamaParseClient:
    """One client per worker process (and event loop): its breaker and upload pacing
    span documents, and its connections are reused."""
    from ingestd.workers.stages.embed import worker_runner

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
    return client


def _remote(ctx: StageContext, call: Callable[[], Awaitable[T]]) -> T:
    """Run one remote call on the worker's event loop, heartbeating and renewing the lease
    meanwhile; a lost lease cancels the call."""
    from ingestd.workers.stages.embed import worker_runner

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
