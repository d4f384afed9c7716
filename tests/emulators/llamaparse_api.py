"""A faithful local emulator of the LlamaParse (LlamaCloud) parsing API, v2 and v1.

What it reproduces (see /work/shared/reference/peers.md, "LlamaParse (LlamaCloud) API", and
the public LlamaCloud SDK types ``ParsingCreateResponse`` / ``ParsingGetResponse``):

v2
- ``POST /api/v2/parse/upload``: multipart ``file`` plus ``configuration`` (a JSON string; the
  emulator reads only ``webhook_configurations``, each with ``webhook_url``,
  ``webhook_events`` (omitted = every event), ``webhook_headers``, ``webhook_signing_secret``).
  Answers 200 with the job: ``{"id", "project_id", "status": "PENDING", "created_at",
  "updated_at", "error_message": null, "name"}``.
- ``GET /api/v2/parse/{job_id}?expand=markdown[,text,markdown_full,text_full,job_metadata]``
  (comma-separated or repeated): ``{"job": {...as above, status PENDING|RUNNING|COMPLETED|
  FAILED|CANCELLED}}`` and, once COMPLETED, the expanded fields:
  ``"markdown": {"pages": [{"page_number": 1, "markdown": "...", "success": true}]}``,
  ``"markdown_full": "..."``, ``"text": {"pages": [{"page_number": 1, "text": "..."}]}``,
  ``"text_full"``, ``"job_metadata": {"credits_used", "pages"}``. A failed job carries
  ``job.error_message``. The emulator produces one page per document.
- Webhooks: on each event a configuration subscribes to (``parse.pending`` at upload,
  ``parse.success`` / ``parse.error`` at the end) the emulator POSTs JSON
  ``{"event_id": "evt_...", "event_type": "parse.success", "timestamp": <unix seconds>,
  "data": {"job_id", "project_id", "status", "error_message"}}`` with the configured
  ``webhook_headers`` and, when a ``webhook_signing_secret`` is set, ``LC-Signature:
  sha256=<hex HMAC-SHA256 of the raw body>``. The event carries identifiers and status, not
  the result (receivers fetch ``?expand=markdown``); ``webhook_include_markdown`` adds
  ``data.markdown`` for receivers that want it pushed. ``timestamp`` lets a receiver reject
  stale or replayed deliveries. A delivery answered non-2xx, or that cannot connect or times
  out, is retried with exponential backoff (``webhook_backoff`` doubling up to
  ``webhook_backoff_max``) for at most ``webhook_max_attempts`` attempts.

v1
- ``POST /api/parsing/upload`` (multipart ``file``, optional ``webhook_url``) -> ``{"id",
  "status": "PENDING"}``; ``GET /api/parsing/job/{id}`` -> ``{"id", "status": PENDING|SUCCESS|
  ERROR|CANCELED, "error_code", "error_message"}``; ``GET /api/parsing/job/{id}/result/
  markdown`` -> ``{"markdown", "job_metadata"}`` and ``.../result/text`` -> ``{"text",
  "job_metadata"}``; a result asked for before SUCCESS -> 400 ``{"detail"}``.
- v1 webhook (the documented v1 shape, unsigned as v1 documents no signature): ``{"txt",
  "md", "json": [{"page": 1, "text", "md", "images": []}], "images": []}`` plus the emulator's
  ``job_id``, ``status`` and ``timestamp``; a failed job sends ``{"job_id", "status": "ERROR",
  "error_message", "timestamp"}``.

Common
- Bearer auth against ``api_key`` (401 ``{"detail"}``); an unknown job -> 404.
- Jobs progress on the emulator's own tasks: PENDING -> RUNNING -> (``processing_delay``
  seconds; ``hold_jobs`` keeps them RUNNING until ``release()``) -> COMPLETED or FAILED.
- The result is derived from the uploaded bytes: text/markdown and text/plain are decoded as
  UTF-8; anything else goes through ``shared.parsers`` (``detect_mime`` + ``iter_blocks``,
  blocks concatenated). A file that cannot be read fails the job with a message.
- Upload limits: a sliding window of ``upload_limit`` uploads per ``upload_window`` seconds
  (the real "50 / 10 s"; 429 with ``retry-after`` seconds until a slot frees), and
  ``credits`` (None = unlimited; each completed page costs ``credits_per_page``; at 0 an
  upload gets 402).
- Faults (``LlamaParseFault``), a queue ``config.faults`` (each upload after auth takes the
  next one) and per-kind probabilities ``config.fault_rates`` rolled once per upload on an RNG
  seeded with ``config.seed``: 429 on upload, 402 out of credits, a failed job
  (FAILED/ERROR with ``failure_message``), a terminal webhook that never comes (the job still
  completes), a duplicate delivery (the same bytes sent twice), a delivery delayed by
  ``webhook_delay`` seconds.

Counters are in ``emulator.stats`` (``LlamaParseStats``): requests and per-status counts,
accepted uploads, polls, jobs completed/failed, every delivery attempt (``DeliveryRecord``
with its response code or connection error), suppressed and abandoned deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import aiohttp
from aiohttp import web

from tests.emulators._base import (
    DEFAULT_RECORDED_HEADERS,
    BaseStats,
    HTTPEmulator,
    RequestRecord,
    bearer_token,
    recorded_headers,
)

DEFAULT_API_KEY = "llx-emulator-key"
SIGNATURE_HEADER = "LC-Signature"

EVENT_PENDING = "parse.pending"
EVENT_SUCCESS = "parse.success"
EVENT_ERROR = "parse.error"

_V1_STATUS = {
    "PENDING": "PENDING",
    "RUNNING": "PENDING",
    "COMPLETED": "SUCCESS",
    "FAILED": "ERROR",
    "CANCELLED": "CANCELED",
}
_TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".text")
_TEXT_MIMES = ("text/markdown", "text/plain", "text/x-markdown")


class LlamaParseFault(StrEnum):
    RATE_LIMIT = "429"
    OUT_OF_CREDITS = "402"
    JOB_FAILED = "job_failed"
    WEBHOOK_NEVER = "webhook_never"
    WEBHOOK_DUPLICATE = "webhook_duplicate"
    WEBHOOK_DELAYED = "webhook_delayed"


_WEBHOOK_FAULTS = frozenset(
    {
        LlamaParseFault.WEBHOOK_NEVER,
        LlamaParseFault.WEBHOOK_DUPLICATE,
        LlamaParseFault.WEBHOOK_DELAYED,
    }
)


@dataclass
class LlamaParseEmulatorConfig:
    api_key: str | None = DEFAULT_API_KEY  # None: any non-empty bearer token is accepted
    processing_delay: float = 0.0
    hold_jobs: bool = False
    upload_limit: int | None = 50
    upload_window: float = 10.0
    forced_retry_after: float = 1.0  # what an injected RATE_LIMIT fault tells the client
    credits: int | None = None
    credits_per_page: int = 1
    faults: deque[LlamaParseFault] = field(default_factory=deque)
    fault_rates: dict[LlamaParseFault, float] = field(default_factory=dict)
    seed: int = 0
    failure_message: str = "Failed to parse the document: the file could not be processed."
    webhook_max_attempts: int = 5
    webhook_backoff: float = 0.5
    webhook_backoff_max: float = 8.0
    webhook_timeout: float = 10.0
    webhook_delay: float = 5.0
    webhook_include_markdown: bool = False
    max_upload_bytes: int = 512 * 1024 * 1024
    project_id: str = "proj-emulator"
    recorded_headers: tuple[str, ...] = DEFAULT_RECORDED_HEADERS


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    time: float
    job_id: str
    event_type: str
    event_id: str | None  # None for v1 deliveries, which carry no event id
    url: str
    attempt: int
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    error: str | None
    duplicate: bool = False


@dataclass
class LlamaParseStats(BaseStats):
    uploads: int = 0
    polls: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    webhooks_suppressed: int = 0
    webhooks_abandoned: int = 0

    def delivered(self, job_id: str, event_type: str | None = None) -> list[DeliveryRecord]:
        """Attempts for ``job_id`` (and ``event_type``) that the receiver answered 2xx."""
        return [
            d
            for d in self.deliveries
            if d.job_id == job_id
            and (event_type is None or d.event_type == event_type)
            and d.status is not None
            and 200 <= d.status < 300
        ]


@dataclass(frozen=True, slots=True)
class _Webhook:
    url: str
    events: frozenset[str] | None  # None: every event
    headers: dict[str, str]
    secret: str | None
    v1: bool = False

    def wants(self, event_type: str) -> bool:
        return self.v1 or self.events is None or event_type in self.events


@dataclass
class Job:
    id: str
    api: Literal["v1", "v2"]
    filename: str
    content_type: str
    status: str  # the v2 vocabulary; v1 answers are mapped through _V1_STATUS
    created_at: datetime
    updated_at: datetime
    fault: LlamaParseFault | None
    webhooks: list[_Webhook]
    data: bytes | None = None  # dropped once the job has finished
    markdown: str | None = None
    error_message: str | None = None
    pages: int = 0
    finished_at: float | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def as_v2(self, project_id: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": project_id,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "error_message": self.error_message,
            "name": self.filename,
        }

    def as_v1(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": _V1_STATUS[self.status]}
        if self.status == "FAILED":
            out["error_code"] = "PARSE_ERROR"
            out["error_message"] = self.error_message
        return out


class _Reject(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def sign(body: bytes, secret: str) -> str:
    """The ``LC-Signature`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def extract_markdown(filename: str, content_type: str, data: bytes) -> str:
    """The markdown the emulator serves for an uploaded file; raises ValueError when the file
    cannot be read (the job then fails with that message)."""
    lowered = filename.lower()
    mime = content_type.split(";", 1)[0].strip().lower()
    if lowered.endswith(_TEXT_SUFFIXES) or mime in _TEXT_MIMES:
        return _decode_text(data)
    try:
        # Imported here: shared.parsers is optional for the emulator's own import.
        from ingestd.shared.parsers import detect_mime, iter_blocks
    except ImportError as exc:
        raise ValueError(
            f"The emulator cannot parse this file type: shared.parsers is unavailable ({exc})"
        ) from exc
    try:
        detected = detect_mime(filename, data[:8192])
        if detected in _TEXT_MIMES:
            return _decode_text(data)
        # Blocks are bounded slices of one text stream (they may end mid-line): concatenate.
        return "".join(iter_blocks(io.BytesIO(data), detected))
    except ValueError:
        raise
    except Exception as exc:  # the parser's verdict on the document, reported on the job
        raise ValueError(f"Failed to parse the document: {exc}") from exc


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("The file is not valid UTF-8 text.") from exc


class LlamaParseEmulator(HTTPEmulator):
    def __init__(
        self,
        config: LlamaParseEmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cfg = config or LlamaParseEmulatorConfig()
        super().__init__(host, port, max_body=cfg.max_upload_bytes + 1024 * 1024)
        self.config = cfg
        self.stats = LlamaParseStats()
        self.jobs: dict[str, Job] = {}
        self._clock = clock
        self._upload_times: deque[float] = deque()
        self._rng_seed = cfg.seed
        self._rng = random.Random(cfg.seed)
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await super().start()
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        await super().stop()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v2/parse/upload", self._upload_v2)
        app.router.add_get("/api/v2/parse/{job_id}", self._get_v2)
        app.router.add_post("/api/parsing/upload", self._upload_v1)
        app.router.add_get("/api/parsing/job/{job_id}", self._get_v1)
        app.router.add_get("/api/parsing/job/{job_id}/result/{kind}", self._result_v1)

    # -- controls for tests --------------------------------------------------------------------
    def inject(self, fault: LlamaParseFault, times: int = 1) -> None:
        """The next ``times`` uploads (after auth) get ``fault``."""
        self.config.faults.extend([fault] * times)

    def release(self, job_id: str | None = None) -> None:
        """Let a job held by ``hold_jobs`` (or every held job) finish. Any thread."""

        def _release() -> None:
            for job in self.jobs.values():
                if job_id is None or job.id == job_id:
                    job.released.set()

        self._call_on_loop(_release)

    async def wait_job(self, job_id: str, within: float = 10.0) -> Job:
        """Wait until the job is COMPLETED or FAILED (not for its webhooks: see wait_idle)."""
        job = self.jobs[job_id]
        async with asyncio.timeout(within):
            await job.finished.wait()
        return job

    # -- plumbing ------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        token = bearer_token(request)
        if token is None:
            return False
        return self.config.api_key is None or token == self.config.api_key

    def _reply(
        self,
        request: web.Request,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        fault: LlamaParseFault | None = None,
    ) -> web.Response:
        self.stats._record(
            RequestRecord(
                time=time.time(),
                method=request.method,
                path=request.path,
                status=status,
                headers=recorded_headers(request, self.config.recorded_headers),
                fault=None if fault is None else fault.value,
            )
        )
        return web.json_response(payload, status=status, headers=headers)

    def _reject(
        self, request: web.Request, rej: _Reject, fault: LlamaParseFault | None = None
    ) -> web.Response:
        return self._reply(request, rej.status, {"detail": rej.detail}, rej.headers, fault)

    def _unauthorized(self, request: web.Request) -> web.Response:
        return self._reject(request, _Reject(401, "Invalid authentication credentials"))

    def _roll_fault(self) -> LlamaParseFault | None:
        return self._next_fault(LlamaParseFault, self.config)

    def _admit_upload(self, fault: LlamaParseFault | None) -> None:
        """Raise _Reject when the upload is throttled or out of credits."""
        cfg = self.config
        if fault is LlamaParseFault.RATE_LIMIT:
            wait = cfg.forced_retry_after
            raise _Reject(
                429,
                "Rate limit exceeded for uploads. Please retry later.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if cfg.upload_limit is not None:
            now = self._clock()
            while self._upload_times and self._upload_times[0] <= now - cfg.upload_window:
                self._upload_times.popleft()
            if len(self._upload_times) >= cfg.upload_limit:
                wait = self._upload_times[0] + cfg.upload_window - now
                raise _Reject(
                    429,
                    f"Rate limit exceeded: at most {cfg.upload_limit} uploads per "
                    f"{cfg.upload_window:g} seconds.",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        if fault is LlamaParseFault.OUT_OF_CREDITS or (
            cfg.credits is not None and cfg.credits <= 0
        ):
            raise _Reject(
                402,
                "You have run out of credits. Upgrade your plan or add credits to continue "
                "parsing.",
            )

    async def _read_upload(self, request: web.Request) -> tuple[str, str, bytes, dict[str, str]]:
        """(filename, content type, bytes, other form fields) of a multipart upload."""
        if not request.content_type.startswith("multipart/"):
            raise _Reject(400, "The request must be multipart/form-data with a 'file' field.")
        reader = await request.multipart()
        filename, content_type, data = "", "", b""
        has_file = False
        fields: dict[str, str] = {}
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file":
                has_file = True
                filename = part.filename or "upload"
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                buf = bytearray()
                while chunk := await part.read_chunk(1 << 20):
                    buf += chunk
                    if len(buf) > self.config.max_upload_bytes:
                        raise _Reject(413, "The file is larger than the upload limit.")
                data = bytes(buf)
            elif part.name:
                fields[part.name] = await part.text()
        if not has_file:
            raise _Reject(400, "A file is required: send it in the 'file' form field.")
        if not data:
            raise _Reject(400, "The uploaded file is empty.")
        return filename, content_type, data, fields

    def _create_job(
        self,
        api: Literal["v1", "v2"],
        filename: str,
        content_type: str,
        data: bytes,
        webhooks: list[_Webhook],
        fault: LlamaParseFault | None,
    ) -> Job:
        now = _utcnow()
        job = Job(
            id=str(uuid.uuid4()),
            api=api,
            filename=filename,
            content_type=content_type,
            status="PENDING",
            created_at=now,
            updated_at=now,
            fault=fault,
            webhooks=webhooks,
            data=data,
        )
        self.jobs[job.id] = job
        self.stats.uploads += 1
        if self.config.upload_limit is not None:
            self._upload_times.append(self._clock())
        self._emit(job, EVENT_PENDING)
        self._spawn(self._run_job(job))
        return job

    # -- handlers ------------------------------------------------------------------------------
    async def _upload_v2(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        fault = self._roll_fault()
        try:
            self._admit_upload(fault)
            filename, content_type, data, fields = await self._read_upload(request)
            webhooks = _v2_webhooks(fields.get("configuration"))
        except _Reject as rej:
            return self._reject(request, rej, fault)
        job = self._create_job("v2", filename, content_type, data, webhooks, fault)
        return self._reply(request, 200, job.as_v2(self.config.project_id), fault=fault)

    async def _upload_v1(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        fault = self._roll_fault()
        try:
            self._admit_upload(fault)
            filename, content_type, data, fields = await self._read_upload(request)
            webhooks: list[_Webhook] = []
            url = fields.get("webhook_url", "").strip()
            if url:
                _check_url(url)
                webhooks.append(_Webhook(url, None, {}, None, v1=True))
        except _Reject as rej:
            return self._reject(request, rej, fault)
        job = self._create_job("v1", filename, content_type, data, webhooks, fault)
        return self._reply(request, 200, {"id": job.id, "status": "PENDING"}, fault=fault)

    def _find(self, request: web.Request) -> Job:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            raise _Reject(404, "Job not found")
        return job

    async def _get_v2(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        self.stats.polls += 1
        try:
            job = self._find(request)
        except _Reject as rej:
            return self._reject(request, rej)
        expand = {
            item.strip()
            for value in request.query.getall("expand", [])
            for item in value.split(",")
            if item.strip()
        }
        body: dict[str, Any] = {"job": job.as_v2(self.config.project_id)}
        if job.status == "COMPLETED" and job.markdown is not None:
            md = job.markdown
            if "markdown" in expand:
                body["markdown"] = {"pages": [{"page_number": 1, "markdown": md, "success": True}]}
            if "markdown_full" in expand:
                body["markdown_full"] = md
            if "text" in expand:
                body["text"] = {"pages": [{"page_number": 1, "text": md}]}
            if "text_full" in expand:
                body["text_full"] = md
            if "job_metadata" in expand:
                body["job_metadata"] = {"credits_used": self._cost(job), "pages": job.pages}
        return self._reply(request, 200, body)

    async def _get_v1(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        self.stats.polls += 1
        try:
            job = self._find(request)
        except _Reject as rej:
            return self._reject(request, rej)
        return self._reply(request, 200, job.as_v1())

    async def _result_v1(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        self.stats.polls += 1
        kind = request.match_info["kind"]
        try:
            job = self._find(request)
            if kind not in ("markdown", "text"):
                raise _Reject(404, f"Unsupported result type: {kind}")
            if job.status == "FAILED":
                raise _Reject(400, f"Job failed: {job.error_message}")
            if job.status != "COMPLETED" or job.markdown is None:
                raise _Reject(400, f"Job is not complete: status {_V1_STATUS[job.status]}")
        except _Reject as rej:
            return self._reject(request, rej)
        metadata = {
            "credits_used": self._cost(job),
            "job_credits_usage": self._cost(job),
            "job_pages": job.pages,
            "job_auto_mode_triggered_pages": 0,
            "job_is_cache_hit": False,
        }
        return self._reply(request, 200, {kind: job.markdown, "job_metadata": metadata})

    def _cost(self, job: Job) -> int:
        return job.pages * self.config.credits_per_page

    # -- job progression -----------------------------------------------------------------------
    async def _run_job(self, job: Job) -> None:
        cfg = self.config
        self._set_status(job, "RUNNING")
        if cfg.processing_delay > 0:
            await asyncio.sleep(cfg.processing_delay)
        if cfg.hold_jobs:
            await job.released.wait()
        data, job.data = job.data or b"", None
        if job.fault is LlamaParseFault.JOB_FAILED:
            self._finish(job, error=cfg.failure_message)
            return
        try:
            markdown = await asyncio.to_thread(
                extract_markdown, job.filename, job.content_type, data
            )
        except ValueError as exc:
            self._finish(job, error=str(exc))
            return
        self._finish(job, markdown=markdown)

    def _set_status(self, job: Job, status: str) -> None:
        job.status = status
        job.updated_at = _utcnow()

    def _finish(self, job: Job, *, markdown: str | None = None, error: str | None = None) -> None:
        if error is None:
            job.markdown = markdown
            job.pages = 1
            self.stats.jobs_completed += 1
            if self.config.credits is not None:
                self.config.credits -= self._cost(job)
            self._set_status(job, "COMPLETED")
            event = EVENT_SUCCESS
        else:
            job.error_message = error
            self.stats.jobs_failed += 1
            self._set_status(job, "FAILED")
            event = EVENT_ERROR
        job.finished_at = time.time()
        job.finished.set()
        self._emit(job, event)

    # -- webhooks ------------------------------------------------------------------------------
    def _emit(self, job: Job, event_type: str) -> None:
        terminal = event_type != EVENT_PENDING
        for hook in job.webhooks:
            if not hook.wants(event_type) or (hook.v1 and not terminal):
                continue
            if terminal and job.fault is LlamaParseFault.WEBHOOK_NEVER:
                self.stats.webhooks_suppressed += 1
                continue
            event_id, body = self._webhook_body(job, event_type, hook)
            headers = {"Content-Type": "application/json", **hook.headers}
            if hook.secret:
                headers[SIGNATURE_HEADER] = sign(body, hook.secret)
            fault = job.fault if terminal and job.fault in _WEBHOOK_FAULTS else None
            self._spawn(self._deliver(job.id, event_type, event_id, hook.url, body, headers, fault))

    def _webhook_body(self, job: Job, event_type: str, hook: _Webhook) -> tuple[str | None, bytes]:
        stamp = int(time.time())
        if hook.v1:
            if job.status == "COMPLETED":
                md = job.markdown or ""
                v1: dict[str, Any] = {
                    "txt": md,
                    "md": md,
                    "json": [{"page": 1, "text": md, "md": md, "images": []}],
                    "images": [],
                }
            else:
                v1 = {"error_message": job.error_message}
            v1.update({"job_id": job.id, "status": _V1_STATUS[job.status], "timestamp": stamp})
            return None, json.dumps(v1).encode()
        event_id = "evt_" + uuid.uuid4().hex
        data: dict[str, Any] = {
            "job_id": job.id,
            "project_id": self.config.project_id,
            "status": job.status,
            "error_message": job.error_message,
        }
        if self.config.webhook_include_markdown and job.status == "COMPLETED":
            data["markdown"] = job.markdown
        payload = {"event_id": event_id, "event_type": event_type, "timestamp": stamp, "data": data}
        return event_id, json.dumps(payload).encode()

    async def _deliver(
        self,
        job_id: str,
        event_type: str,
        event_id: str | None,
        url: str,
        body: bytes,
        headers: dict[str, str],
        fault: LlamaParseFault | None,
    ) -> None:
        if fault is LlamaParseFault.WEBHOOK_DELAYED:
            await asyncio.sleep(self.config.webhook_delay)
        delivered = await self._attempts(job_id, event_type, event_id, url, body, headers, False)
        if delivered and fault is LlamaParseFault.WEBHOOK_DUPLICATE:
            await self._attempts(job_id, event_type, event_id, url, body, headers, True)

    async def _attempts(
        self,
        job_id: str,
        event_type: str,
        event_id: str | None,
        url: str,
        body: bytes,
        headers: dict[str, str],
        duplicate: bool,
    ) -> bool:
        cfg = self.config
        session = self._session
        if session is None:
            raise RuntimeError("LlamaParseEmulator is not started")
        attempts = max(1, cfg.webhook_max_attempts)
        for attempt in range(1, attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                timeout = aiohttp.ClientTimeout(total=cfg.webhook_timeout)
                async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
            self.stats.deliveries.append(
                DeliveryRecord(
                    time=time.time(),
                    job_id=job_id,
                    event_type=event_type,
                    event_id=event_id,
                    url=url,
                    attempt=attempt,
                    status=status,
                    error=error,
                    duplicate=duplicate,
                )
            )
            if status is not None and 200 <= status < 300:
                return True
            if attempt < attempts:
                backoff = min(cfg.webhook_backoff * 2 ** (attempt - 1), cfg.webhook_backoff_max)
                await asyncio.sleep(backoff)
        self.stats.webhooks_abandoned += 1
        return False


def _check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise _Reject(422, "webhook_url must be an HTTP or HTTPS URL.")


def _v2_webhooks(configuration: str | None) -> list[_Webhook]:
    if not configuration:
        return []
    try:
        parsed = json.loads(configuration)
    except ValueError as exc:
        raise _Reject(400, "'configuration' must be a JSON object.") from exc
    if not isinstance(parsed, dict):
        raise _Reject(400, "'configuration' must be a JSON object.")
    raw_hooks = parsed.get("webhook_configurations") or []
    if not isinstance(raw_hooks, list):
        raise _Reject(422, "webhook_configurations must be a list.")
    hooks: list[_Webhook] = []
    for raw in raw_hooks:
        if not isinstance(raw, dict) or not isinstance(raw.get("webhook_url"), str):
            raise _Reject(422, "Each webhook configuration needs a webhook_url.")
        url = raw["webhook_url"]
        _check_url(url)
        events = raw.get("webhook_events")
        if events is not None and (
            not isinstance(events, list) or not all(isinstance(e, str) for e in events)
        ):
            raise _Reject(422, "webhook_events must be a list of event names.")
        headers = raw.get("webhook_headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise _Reject(422, "webhook_headers must map header names to strings.")
        secret = raw.get("webhook_signing_secret")
        if secret is not None and not isinstance(secret, str):
            raise _Reject(422, "webhook_signing_secret must be a string.")
        hooks.append(
            _Webhook(url, None if events is None else frozenset(events), headers, secret or None)
        )
    return hooks
