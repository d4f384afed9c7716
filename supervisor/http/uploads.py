"""``POST /v1/documents``: a multipart upload streamed straight into a large object.

The ``file`` part is never held whole, in memory or on disk: ``shared.ingest.ingest_stream``
runs in a thread on a pooled connection and pulls the part from the event loop a piece
at a time, hashing and writing each piece into the large object as it comes. Past
``max_upload_mb`` the read raises, the transaction rolls back (the partial large object
with it) and the answer is 413; a ``Content-Length`` already over the limit is refused
before anything is read. The same bytes uploaded twice answer with the same document.

The content type is sniffed from the first bytes (``shared.parsers.detect_mime``); the
part's ``Content-Type`` is ignored.

An ``Idempotency-Key`` header (draft-ietf-httpapi-idempotency-key-header) makes a retried
upload safe to send again: the first answer with that key is kept for
``IDEMPOTENCY_KEEP_SECONDS`` and replayed (with ``Idempotent-Replayed: true``) to a
request with the same key and the same bytes; the same key with other bytes is a 422,
and while the first request is still running, a 409. An upload that fails keeps no
record, so it can be retried with its key.

| answer | when                                                                  |
|--------|-----------------------------------------------------------------------|
| 201    | stored: {"document_id", "status": "queued", "created": true}, with    |
|        | ``Location: /v1/documents/{id}``                                      |
| 200    | these bytes were already stored: their document, "created": false     |
| 400    | no ``file`` part, a malformed multipart body or ``Idempotency-Key``,  |
|        | or the upload broke off                                               |
| 408    | the client stopped sending for ``READ_TIMEOUT_SECONDS``               |
| 409    | a request with this ``Idempotency-Key`` is still in progress          |
| 413    | larger than ``max_upload_mb``                                         |
| 415    | not ``multipart/form-data``                                           |
| 422    | the file is empty, or the ``Idempotency-Key`` was used for other bytes|
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
from typing import Any

import aiohttp
import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ingestd.shared.db import idempotency
from ingestd.shared.db.idempotency import KeyRecord
from ingestd.shared.ingest import IngestResult, ingest_stream
from ingestd.supervisor.http.auth import caller, upload_limit_mb
from ingestd.supervisor.http.state import STATE, error_response, json_response

FILE_FIELD = "file"
PIECE = 1 << 20
# Boundaries and part headers around the file: what a Content-Length may exceed the
# file-size limit by before it is refused unread.
MULTIPART_ALLOWANCE = 64 * 1024
# Form fields other than the file are skipped, but not without bound.
MAX_OTHER_FIELD_BYTES = 64 * 1024
READ_TIMEOUT_SECONDS = 60.0
MAX_FILENAME_CHARS = 255
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEEP_SECONDS = 24 * 3600
# An unanswered claim older than this belongs to a request whose process died.
IDEMPOTENCY_STALE_SECONDS = 3600
# A structured-field string (RFC 8941) or the bare token clients often send.
_KEY = re.compile(r'"?([\x21\x23-\x7e]{1,255})"?')


class _StreamError(Exception):
    def response(self, max_mb: int) -> web.Response:
        raise NotImplementedError


class _TooLarge(_StreamError):
    def response(self, max_mb: int) -> web.Response:
        return _too_large(max_mb)


class _Stalled(_StreamError):
    def response(self, max_mb: int) -> web.Response:
        return error_response(
            408, f"upload stalled: nothing received for {READ_TIMEOUT_SECONDS:g}s"
        )


class _BadForm(Exception):
    pass


async def upload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    limit_mb = upload_limit_mb(request)  # auth: the token's own cap, if lower
    limit = limit_mb * 2**20
    if request.content_type != "multipart/form-data":
        return error_response(
            415, f"send the document as multipart/form-data in a field named '{FILE_FIELD}'"
        )
    key = None
    if IDEMPOTENCY_HEADER in request.headers:
        match = _KEY.fullmatch(request.headers[IDEMPOTENCY_HEADER])
        if match is None:
            return error_response(
                400, f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters"
            )
        # Keys are the caller's own: another token's key must neither replay its answer
        # (which names its document) nor collide with it.
        key = f"{caller(request)}:{match[1]}"
    if request.content_length is not None and request.content_length > limit + MULTIPART_ALLOWANCE:
        return _too_large(limit_mb)
    try:
        reader = await request.multipart()
        part = await _file_part(reader)
    except (_BadForm, ValueError, aiohttp.ClientError, HttpProcessingError) as exc:
        # HttpProcessingError: a part header aiohttp refuses, e.g. a raw control character.
        return error_response(400, f"malformed multipart body ({type(exc).__name__})")
    if part is None:
        return error_response(400, f"no file: send it in a multipart field named '{FILE_FIELD}'")
    stream = _PartStream(part, asyncio.get_running_loop(), limit)
    if key is None:
        return await _store(request, part, stream)
    held = await state.db(
        idempotency.claim,
        key,
        keep_seconds=IDEMPOTENCY_KEEP_SECONDS,
        stale_seconds=IDEMPOTENCY_STALE_SECONDS,
    )
    if held is not None:
        return await _replay(request, held, stream)
    try:
        response = await _store(request, part, stream)
    except BaseException:
        # Shielded: a cancelled request still frees its key for the client's retry.
        await asyncio.shield(state.db(idempotency.release, key))
        raise
    if response.status not in (200, 201):
        await state.db(idempotency.release, key)
        return response
    assert response.text is not None
    body = orjson.loads(response.text)
    await state.db(
        idempotency.complete,
        key,
        request_sha256=stream.sha256,
        status_code=response.status,
        response=body,
        document_id=body["document_id"],
    )
    return response


async def _store(request: web.Request, part: BodyPartReader, stream: _PartStream) -> web.Response:
    state = request.app[STATE]
    filename = clean_filename(part.filename)
    try:
        async with state.upload_slots:
            result: IngestResult = await state.db(
                ingest_stream, stream, source=f"upload:{filename}", filename=filename
            )
    except _StreamError as exc:
        return exc.response(upload_limit_mb(request))
    except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return error_response(400, f"upload interrupted ({type(exc).__name__})")
    if result.status == "rejected":
        return error_response(422, result.error or "rejected")
    if result.created:
        state.metrics.incr("documents.ingested")
    body = {
        "document_id": str(result.document_id),
        "status": result.status,
        "created": result.created,
    }
    return _answer(body, 201 if result.created else 200)


def _answer(body: dict[str, Any], status: int) -> web.Response:
    response = json_response(body, status=status)
    if status == 201:
        response.headers["Location"] = f"/v1/documents/{body['document_id']}"
    return response


async def _replay(request: web.Request, held: KeyRecord, stream: _PartStream) -> web.Response:
    """Answer a request whose key is already held: read (and hash, not store) the
    bytes, then replay the first answer or refuse."""
    if held.status_code is None:
        return error_response(
            409, f"a request with this {IDEMPOTENCY_HEADER} is still in progress; retry later"
        )
    try:
        async with request.app[STATE].upload_slots:
            await asyncio.to_thread(stream.drain)
    except _StreamError as exc:
        return exc.response(upload_limit_mb(request))
    except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return error_response(400, f"upload interrupted ({type(exc).__name__})")
    if stream.sha256 != held.request_sha256:
        return error_response(
            422, f"this {IDEMPOTENCY_HEADER} was used for a different file; use a new key"
        )
    assert held.response is not None
    response = _answer(held.response, held.status_code)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _too_large(max_mb: int) -> web.Response:
    response = error_response(413, f"the file is larger than max_upload_mb ({max_mb} MiB)")
    # Close instead of reading and discarding the rest of a huge body.
    response.force_close()
    return response


async def _file_part(reader: aiohttp.MultipartReader) -> BodyPartReader | None:
    """The ``file`` part, with any fields before it read and dropped (bounded)."""
    while True:
        part = await reader.next()
        if part is None:
            return None
        if not isinstance(part, BodyPartReader):
            raise _BadForm("nested multipart")
        if part.name == FILE_FIELD:
            return part
        seen = 0
        while chunk := await part.read_chunk(PIECE):
            seen += len(chunk)
            if seen > MAX_OTHER_FIELD_BYTES:
                raise _BadForm(f"field {part.name!r} too large")


def clean_filename(raw: str | None) -> str:
    """The last path component of what the client sent, without control characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("", name).strip()
    if name in ("", ".", ".."):
        return "upload"
    return name[:MAX_FILENAME_CHARS]


class _PartStream:
    """A blocking ``read(n)`` over a multipart part, for a thread: each piece is fetched
    on the event loop. Counts and hashes the bytes; raises ``_TooLarge`` past ``limit``."""

    def __init__(self, part: BodyPartReader, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._part = part
        self._loop = loop
        self._limit = limit
        self._total = 0
        self._eof = False
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        """The hex digest of the bytes read so far (all of them once read to the end)."""
        return self._hash.hexdigest()

    def drain(self) -> None:
        """Read to the end, keeping only the count and the hash."""
        while self.read(PIECE):
            pass

    def _fetch(self, size: int) -> bytes:
        future = asyncio.run_coroutine_threadsafe(self._part.read_chunk(size), self._loop)
        try:
            return future.result(READ_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise _Stalled() from None

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = PIECE
        out = bytearray()
        while len(out) < n and not self._eof:
            chunk = self._fetch(min(n - len(out), PIECE))
            if not chunk:
                self._eof = True
                break
            self._total += len(chunk)
            if self._total > self._limit:
                raise _TooLarge()
            self._hash.update(chunk)
            out += chunk
        return bytes(out)
