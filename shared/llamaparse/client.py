"""An async LlamaParse (LlamaCloud v2) client: upload, job status, results.

Every call is classified through ``shared.resilience`` and retried on 429 and
transient failures (honouring Retry-After), behind a circuit breaker; uploads
are paced under the organisation's upload limit (50 per 10 s, a sliding
window, hence a burst of one). Uploads carry a signed webhook configuration
(``parse.success`` and ``parse.error``) so completion is pushed, with
``wait()`` polling as the fallback.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import mimetypes
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from ingestd.shared.errors import ConfigError, ErrorClass, IngestError, InvalidInput, TransientError
from ingestd.shared.resilience import (
    REQUEST_BACKOFF,
    AttemptEvent,
    Backoff,
    CircuitBreaker,
    RateLimiter,
    call_with_retries,
    classify_exception,
    classify_http,
)
from ingestd.shared.resilience.classify import Endpoint, safe_message

_log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.cloud.llamaindex.ai"
SERVICE = "llamaparse"
WEBHOOK_EVENTS = ("parse.success", "parse.error")
CORRELATION_HEADER = "X-Correlation-Id"
# The documented upload limit is 50 per 10 s per organisation; one short of it, as a rate.
DEFAULT_UPLOADS_PER_MINUTE = 49 * 6

Upload = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str
    state: JobState
    error_message: str | None = None  # the provider's reason for FAILED, redacted and cut

    @property
    def terminal(self) -> bool:
        return self.state.terminal


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    markdown: str
    success: bool = True


class LlamaParseClient:
    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 120.0,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        backoff: Backoff = REQUEST_BACKOFF,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        configuration: Mapping[str, Any] | None = None,
        on_event: Callable[[AttemptEvent], None] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("LlamaParse client: an API key is required (LLAMA_CLOUD_API_KEY)")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._endpoint = Endpoint.of("parser API", self.base_url)
        self.timeout = timeout
        self.breaker = breaker or CircuitBreaker(
            SERVICE, failure_threshold=5, reset_timeout=30.0, half_open_max_calls=1
        )
        self.upload_limiter = limiter or RateLimiter(
            rpm=DEFAULT_UPLOADS_PER_MINUTE, safety=1.0, request_burst=1, name=SERVICE
        )
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.configuration = dict(configuration or {})
        self._on_event = on_event
        self._session = session
        self._owns_session = session is None

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> LlamaParseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- API ---------------------------------------------------------------------------------

    async def upload(
        self,
        stream_or_path: Upload,
        filename: str | None = None,
        *,
        webhook_url: str | None = None,
        signing_secret: str | None = None,
        correlation_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Upload a document for parsing; returns the job id.

        With ``webhook_url``, ``signing_secret`` is required: the endpoint will
        only accept deliveries signed with it. Streams must be seekable so an
        upload can be retried.
        """
        if webhook_url and not signing_secret:
            raise ConfigError("LlamaParse upload: a webhook needs a signing secret")
        source = _Source.of(stream_or_path, filename)
        mime = content_type or mimetypes.guess_type(source.filename)[0]
        configuration = dict(self.configuration)
        if webhook_url:
            configuration["webhook_configurations"] = [
                {
                    "webhook_url": webhook_url,
                    "webhook_events": list(WEBHOOK_EVENTS),
                    "webhook_signing_secret": signing_secret,
                }
            ]
        config_json = json.dumps(configuration)
        # The same key on every attempt: lets the service recognise a retried upload.
        headers = {"Idempotency-Key": f"upload-{uuid.uuid4().hex}"}

        async def attempt() -> Any:
            with source.open() as body:
                form = aiohttp.FormData()
                form.add_field(
                    "file",
                    body,
                    filename=source.filename,
                    content_type=mime or "application/octet-stream",
                )
                form.add_field("configuration", config_json, content_type="application/json")
                return await self._request(
                    "POST",
                    "/api/v2/parse/upload",
                    data=form,
                    headers=headers,
                    correlation_id=correlation_id,
                )

        payload = await self._call(attempt, "llamaparse.upload", limiter=self.upload_limiter)
        job_id = _job_field(payload, "id")
        if not isinstance(job_id, str) or not job_id:
            raise TransientError("llamaparse: malformed response (upload returned no job id)")
        _log.info("llamaparse upload accepted: job_id=%s correlation_id=%s", job_id, correlation_id)
        return job_id

    async def status(self, job_id: str, *, correlation_id: str | None = None) -> JobStatus:
        payload = await self._get_job(job_id, expand=None, correlation_id=correlation_id)
        return _status_of(job_id, payload)

    async def fetch_pages(self, job_id: str, *, correlation_id: str | None = None) -> list[Page]:
        """The parsed pages of a COMPLETED job, in page order."""
        payload = await self._get_job(job_id, expand="markdown", correlation_id=correlation_id)
        status = _status_of(job_id, payload)
        _require_completed(status)
        markdown = payload.get("markdown")
        raw_pages = markdown.get("pages") if isinstance(markdown, dict) else None
        if not isinstance(raw_pages, list):
            raise TransientError("llamaparse: malformed response (no markdown pages)")
        pages: list[Page] = []
        for position, raw in enumerate(raw_pages, start=1):
            if not isinstance(raw, dict):
                raise TransientError("llamaparse: malformed response (bad page entry)")
            number = raw.get("page_number", position)
            text = raw.get("markdown")
            success = raw.get("success", True) is not False
            if not isinstance(number, int) or (success and not isinstance(text, str)):
                raise TransientError("llamaparse: malformed response (bad page entry)")
            pages.append(Page(number, text if isinstance(text, str) else "", success))
        pages.sort(key=lambda page: page.number)
        return pages

    async def fetch_markdown(
        self, job_id: str, *, correlation_id: str | None = None, allow_partial: bool = False
    ) -> str:
        """The whole document's markdown. A page the service failed to parse raises
        InvalidInput unless ``allow_partial`` (never a silently missing page)."""
        pages = await self.fetch_pages(job_id, correlation_id=correlation_id)
        failed = [page.number for page in pages if not page.success]
        if failed and not allow_partial:
            raise InvalidInput(
                f"llamaparse: job {job_id} could not parse page(s) "
                f"{', '.join(map(str, failed[:10]))}"
            )
        return "\n\n".join(page.markdown for page in pages if page.success)

    async def iter_markdown(
        self, job_id: str, *, correlation_id: str | None = None
    ) -> AsyncIterator[str]:
        """The markdown page by page (for a chunker that consumes blocks)."""
        for page in await self.fetch_pages(job_id, correlation_id=correlation_id):
            if not page.success:
                raise InvalidInput(f"llamaparse: job {job_id} could not parse page {page.number}")
            yield page.markdown

    async def wait(
        self,
        job_id: str,
        *,
        within: float,
        first_interval: float = 1.0,
        max_interval: float = 5.0,
        correlation_id: str | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> JobStatus:
        """Poll until the job is terminal (the fallback when a webhook does not come)."""
        deadline = time.monotonic() + within
        interval = first_interval
        while True:
            status = await self.status(job_id, correlation_id=correlation_id)
            if status.terminal:
                return status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IngestError(
                    f"llamaparse: job {job_id} still {status.state} after {within:.0f}s",
                    error_class=ErrorClass.DEADLINE,
                )
            await sleep(min(interval, remaining))
            interval = min(max_interval, interval * 1.5)

    # -- plumbing ----------------------------------------------------------------------------

    async def _get_job(
        self, job_id: str, *, expand: str | None, correlation_id: str | None
    ) -> dict[str, Any]:
        if not job_id or "/" in job_id:
            raise InvalidInput("llamaparse: invalid job id")
        params = {"expand": expand} if expand else None

        async def attempt() -> Any:
            return await self._request(
                "GET", f"/api/v2/parse/{job_id}", params=params, correlation_id=correlation_id
            )

        payload = await self._call(attempt, "llamaparse.get_job", limiter=None)
        if not isinstance(payload, dict):
            raise TransientError("llamaparse: malformed response (job is not an object)")
        return payload

    async def _call(
        self,
        attempt: Callable[[], Awaitable[Any]],
        operation: str,
        *,
        limiter: RateLimiter | None,
    ) -> Any:
        return await call_with_retries(
            attempt,
            backoff=self.backoff,
            breaker=self.breaker,
            limiter=limiter,
            max_attempts=self.max_attempts,
            classify=lambda exc: classify_exception(exc, service=SERVICE, endpoint=self._endpoint),
            on_event=self._on_event,
            operation=operation,
            max_wait=self.max_wait,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        correlation_id: str | None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        session = self._ensure_session()
        all_headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if correlation_id:
            all_headers[CORRELATION_HEADER] = correlation_id
        if headers:
            all_headers.update(headers)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with session.request(
            method,
            self.base_url + path,
            data=data,
            params=params,
            headers=all_headers,
            timeout=timeout,
        ) as response:
            body = await response.read()
            if response.status >= 400:
                raise classify_http(response.status, body, response.headers, service=SERVICE)
            try:
                return json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise classify_http(
                    response.status, body, response.headers, service=SERVICE
                ) from None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session


class _Source:
    """Something to upload that can be re-read for each attempt."""

    def __init__(
        self, filename: str, path: Path | None, data: bytes | None, stream: BinaryIO | None
    ) -> None:
        self.filename = filename
        self._path = path
        self._data = data
        self._stream = stream
        self._start = stream.tell() if stream is not None else 0

    @classmethod
    def of(cls, value: Upload, filename: str | None) -> _Source:
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            return cls(filename or path.name, path, None, None)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls(filename or "document", None, bytes(value), None)
        if not (hasattr(value, "read") and value.seekable()):
            raise TypeError("upload needs a path, bytes or a seekable binary stream")
        name = filename or Path(str(getattr(value, "name", "document"))).name
        return cls(name, None, None, value)

    def open(self) -> BinaryIO:
        if self._path is not None:
            return self._path.open("rb")
        if self._data is not None:
            return io.BytesIO(self._data)
        assert self._stream is not None
        self._stream.seek(self._start)
        return _Unclosable(self._stream)


class _Unclosable(io.BufferedIOBase):
    """A view of the caller's stream that our ``with`` (and aiohttp) must not close."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw

    def read(self, size: int | None = -1) -> bytes:
        return self._raw.read(-1 if size is None else size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        # Only this view closes; the caller's stream stays open for a retry.
        super().close()


def _job_field(payload: Any, name: str) -> Any:
    if not isinstance(payload, dict):
        return None
    job = payload.get("job") if isinstance(payload.get("job"), dict) else payload
    return job.get(name)


def _status_of(job_id: str, payload: dict[str, Any]) -> JobStatus:
    raw_state = _job_field(payload, "status")
    try:
        state = JobState(str(raw_state).upper())
    except ValueError:
        shown = safe_message(str(raw_state), 40)
        raise TransientError(
            f"llamaparse: malformed response (unknown job status {shown})"
        ) from None
    message = _job_field(payload, "error_message")
    return JobStatus(job_id, state, safe_message(message) if isinstance(message, str) else None)


def _require_completed(status: JobStatus) -> None:
    if status.state is JobState.COMPLETED:
        return
    if status.state is JobState.FAILED:
        reason = f": {status.error_message}" if status.error_message else ""
        raise InvalidInput(f"llamaparse: job {status.job_id} failed{reason}")
    if status.state is JobState.CANCELLED:
        raise IngestError(
            f"llamaparse: job {status.job_id} was cancelled", error_class=ErrorClass.CANCELLED
        )
    raise TransientError(f"llamaparse: job {status.job_id} is not finished ({status.state})")
