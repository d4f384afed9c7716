"""Embeddings from the OpenAI API (or anything speaking its protocol).

The official client's own retries are switched off (``max_retries=0``): ours go
through the shared rate limiter and circuit breaker, so a 429 storm slows every
caller down together instead of each retrying blind, and it never surfaces as
a failure while waiting is still reasonable. Vectors are requested as base64
(little-endian float32), decoded with ``numpy.frombuffer`` (no JSON floats to
parse) and validated before they are returned.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import openai
import orjson
import pybase64

from ingestd.shared.embedders.base import EmbeddingUsage, check_inputs, validate_embeddings
from ingestd.shared.embedders.models import NATIVE_DIMENSIONS, SHORTENABLE
from ingestd.shared.errors import ConfigError, ErrorClass, InvalidInput, TransientError
from ingestd.shared.resilience import (
    REQUEST_BACKOFF,
    AttemptEvent,
    Backoff,
    CircuitBreaker,
    RateLimiter,
    call_with_retries,
    classify_exception,
)
from ingestd.shared.resilience.classify import Endpoint
from ingestd.shared.tokens import count_tokens, estimate_api_tokens

_log = logging.getLogger(__name__)

MAX_INPUTS_PER_REQUEST = 2048
# Judged by the provider on its byte estimate (shared.tokens.estimate_api_tokens).
MAX_TOKENS_PER_REQUEST = 300_000
# The API accepts 8192; one less leaves room for an off-by-one in anyone's counting.
MAX_INPUT_TOKENS = 8191
CORRELATION_HEADER = "X-Correlation-Id"
SERVICE = "openai"


class OpenAIEmbedder:
    name = "openai"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        *,
        timeout: float = 60.0,
        max_attempts: int = 5,
        rpm: float | None = None,
        tpm: float | None = None,
        share: float = 1.0,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        backoff: Backoff = REQUEST_BACKOFF,
        max_wait: float = 60.0,
        max_inputs_per_request: int = MAX_INPUTS_PER_REQUEST,
        max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST,
        on_event: Callable[[AttemptEvent], None] | None = None,
    ) -> None:
        if not api_key:
            raise ConfigError("OpenAI embedder: an API key is required (OPENAI_API_KEY)")
        self.model = model
        self.dimensions, self._send_dimensions = _resolve_dimensions(model, dimensions)
        self.max_input_tokens = MAX_INPUT_TOKENS
        self.usage = EmbeddingUsage()
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker(
            SERVICE, failure_threshold=5, reset_timeout=30.0, half_open_max_calls=1
        )
        # Even with no configured budget the limiter learns the account's limits from the
        # response headers and holds everyone back after a 429. ``share``: this process's
        # part of the account when several processes use the same key.
        self.limiter = limiter or RateLimiter(rpm, tpm, share=share, name=SERVICE)
        self._max_inputs = max(1, min(max_inputs_per_request, MAX_INPUTS_PER_REQUEST))
        self._max_tokens = max(1, min(max_tokens_per_request, MAX_TOKENS_PER_REQUEST))
        self._on_event = on_event
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            # aiohttp's C parser reads the large base64 responses (~8 KB per vector)
            # with less CPU than the default pure-Python HTTP/1.1 stack.
            http_client=openai.DefaultAioHttpClient(timeout=timeout),
        )
        # Named in network errors: "embedding API unreachable at http://host:port: ...".
        self._endpoint = Endpoint.of("embedding API", str(self._client.base_url))

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        check_inputs(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        estimates = self._estimate(texts)
        parts = [
            await self._embed_batch(
                list(texts[start:stop]), sum(estimates[start:stop]), correlation_id
            )
            for start, stop in _batches(estimates, self._max_inputs, self.max_request_tokens())
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def max_request_tokens(self) -> int:
        """The largest request to send, by the estimate the API counts: the API's cap, and
        no more than this process's rate-limit bucket holds, which a larger request would
        overdraw (the server would then see more than this process's share)."""
        ceiling = self.limiter.request_ceiling()
        return self._max_tokens if ceiling is None else max(1, min(self._max_tokens, ceiling))

    def request_room(self) -> int | None:
        """The largest request that could go without waiting (see ``RateLimiter.request_room``):
        the batcher closes a batch there rather than hold it until the bucket refills."""
        return self.limiter.request_room()

    async def aclose(self) -> None:
        await self._client.close()

    # -- one request -------------------------------------------------------------------------

    async def _embed_batch(
        self, batch: list[str], estimated_tokens: int, correlation_id: str | None
    ) -> np.ndarray:
        extra_headers = {CORRELATION_HEADER: correlation_id} if correlation_id else None
        options: dict[str, Any] = {}
        if self._send_dimensions:
            options["dimensions"] = self.dimensions

        async def attempt() -> tuple[np.ndarray, int | None, str | None]:
            try:
                # The client's generic POST: its auth, base URL, connection pool and
                # error mapping, without ``embeddings.create``'s per-input parameter
                # transform (~28 µs per input, a fifth of the request's client cost).
                raw = await self._client.post(
                    "/embeddings",
                    cast_to=openai.AsyncAPIResponse[bytes],
                    # Serialised by orjson (the client sends content as it is): the
                    # standard library's encoder takes ~20x as long for the same body.
                    content=orjson.dumps(
                        {
                            "input": batch,
                            "model": self.model,
                            "encoding_format": "base64",
                            **options,
                        }
                    ),
                    options={"headers": extra_headers} if extra_headers else {},
                )
            except openai.APIStatusError as exc:
                self.limiter.update_from_headers(
                    exc.response.headers, request_tokens=estimated_tokens
                )
                raise
            self.limiter.update_from_headers(raw.headers, request_tokens=estimated_tokens)
            request_id = raw.headers.get("x-request-id")
            vectors, prompt_tokens = _decode(await raw.read(), len(batch), self.dimensions)
            return vectors, prompt_tokens, request_id

        def on_event(event: AttemptEvent) -> None:
            if event.outcome == "retry":
                self.usage.retries += 1
                # 429s are routine pacing; other retries mean the service is misbehaving.
                level = (
                    logging.DEBUG if event.error_class is ErrorClass.RATE_LIMITED else logging.INFO
                )
                _log.log(
                    level,
                    "openai embeddings attempt %d failed, retrying in %.2fs: %s "
                    "(correlation_id=%s)",
                    event.attempt,
                    event.delay,
                    event.error,
                    correlation_id,
                )
            if self._on_event is not None:
                self._on_event(event)

        vectors, prompt_tokens, request_id = await call_with_retries(
            attempt,
            backoff=self.backoff,
            breaker=self.breaker,
            limiter=self.limiter,
            max_attempts=self.max_attempts,
            classify=lambda exc: classify_exception(exc, service=SERVICE, endpoint=self._endpoint),
            on_event=on_event,
            tokens=estimated_tokens,
            operation="openai.embeddings",
            max_wait=self.max_wait,
        )
        self.usage.requests += 1
        self.usage.texts += len(batch)
        if prompt_tokens is not None:
            self.usage.tokens += prompt_tokens
        _log.debug(
            "openai embeddings ok: %d inputs, %s tokens, request_id=%s correlation_id=%s",
            len(batch),
            prompt_tokens,
            request_id,
            correlation_id,
        )
        return vectors

    def _estimate(self, texts: Sequence[str]) -> list[int]:
        """Per-input byte estimates, rejecting inputs over the model's window on the way."""
        estimates: list[int] = []
        for index, text in enumerate(texts):
            try:
                estimate = estimate_api_tokens(text)
            except UnicodeEncodeError:
                raise InvalidInput(
                    f"input #{index} is not valid Unicode (unpaired surrogate)"
                ) from None
            # A token is at least one byte: only texts longer in bytes can be too long.
            if estimate * 4 > self.max_input_tokens:
                tokens = count_tokens(text)
                if tokens > self.max_input_tokens:
                    raise InvalidInput(
                        f"input #{index} has {tokens} tokens; {self.model} accepts at most "
                        f"{self.max_input_tokens}"
                    )
            estimates.append(estimate)
        return estimates


def _resolve_dimensions(model: str, dimensions: int | None) -> tuple[int, bool]:
    """(dimensions, whether to send the parameter)."""
    native = NATIVE_DIMENSIONS.get(model)
    if native is None:
        if dimensions is None:
            raise ConfigError(
                f"OpenAI embedder: unknown model {model!r}; pass its dimensions explicitly"
            )
        return dimensions, True
    if dimensions is None or dimensions == native:
        return native, False
    if model not in SHORTENABLE:
        raise ConfigError(f"OpenAI embedder: {model} does not support a dimensions setting")
    if not 1 <= dimensions <= native:
        raise ConfigError(f"OpenAI embedder: {model} dimensions must be in 1..{native}")
    return dimensions, True


def _batches(estimates: Sequence[int], max_inputs: int, max_tokens: int) -> list[tuple[int, int]]:
    """[start, stop) ranges honouring the per-request input count and token caps."""
    ranges: list[tuple[int, int]] = []
    start = 0
    total = 0
    for index, estimate in enumerate(estimates):
        count = index - start
        if count and (count >= max_inputs or total + estimate > max_tokens):
            ranges.append((start, index))
            start, total = index, 0
        total += estimate
    if start < len(estimates):
        ranges.append((start, len(estimates)))
    return ranges


class _Item(msgspec.Struct):
    index: int
    # The JSON text as it is in the body (a zero-copy slice): a base64 string, quotes
    # included, is decoded below with SIMD, with no str made of it first.
    embedding: msgspec.Raw


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None


class _Response(msgspec.Struct):
    data: list[_Item]
    usage: _Usage | None = None


_RESPONSE = msgspec.json.Decoder(_Response)
_QUOTE = ord('"')


def _decode(content: bytes, expected: int, dimensions: int) -> tuple[np.ndarray, int | None]:
    """The response body as a validated (expected, dimensions) float32 matrix, plus usage."""
    fast = _decode_usual(content, expected, dimensions)
    if fast is not None:
        matrix, prompt_tokens = fast
        return validate_embeddings(matrix, expected, dimensions), prompt_tokens
    try:
        payload = orjson.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise TransientError("malformed embedding response: body is not valid JSON") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise TransientError("malformed embedding response: no 'data' list")
    if len(data) != expected:
        raise TransientError(
            f"malformed embedding response: expected {expected} vectors, got {len(data)}"
        )
    # Not the usual response (``_decode_usual`` took that): each vector on its own,
    # so that a bad one is named.
    matrix = _decode_each(data, expected, dimensions)
    usage = payload.get("usage")
    prompt_tokens = _prompt_tokens(usage.get("prompt_tokens") if isinstance(usage, dict) else None)
    return validate_embeddings(matrix, expected, dimensions), prompt_tokens


def _prompt_tokens(value: object) -> int | None:
    """The usage the response reports, if it is a plausible count."""
    return value if isinstance(value, int) and value >= 0 else None


def _decode_usual(
    content: bytes, expected: int, dimensions: int
) -> tuple[np.ndarray, int | None] | None:
    """The usual response (every vector a base64 string of the right length, in index
    order), decoded straight from the body: the vectors' JSON strings are cut out of it
    without the ~8 KB str per vector a JSON parser makes, and decoded in one SIMD call
    (~2x faster than the general path below). None for anything else (escapes in a
    string, floats, another order), which the general path then decodes or rejects
    with a message naming the problem."""
    if (dimensions * 4) % 3:
        return None  # padded base64: vectors cannot simply be concatenated
    quoted = dimensions * 4 // 3 * 4 + 2
    try:
        response = _RESPONSE.decode(content)
    except msgspec.DecodeError:  # includes ValidationError: not the usual shape
        return None
    data = response.data
    if len(data) != expected:
        return None
    strings: list[memoryview] = []
    for i, item in enumerate(data):
        raw = memoryview(item.embedding)
        if item.index != i or len(raw) != quoted or raw[0] != _QUOTE:
            return None
        strings.append(raw[1:-1])
    try:
        buffer = pybase64.b64decode(b"".join(strings), validate=True)
    except (binascii.Error, ValueError):
        return None
    matrix = np.frombuffer(buffer, dtype="<f4").reshape(expected, dimensions)
    usage = response.usage
    return matrix, _prompt_tokens(usage.prompt_tokens if usage is not None else None)


def _decode_each(data: list[Any], expected: int, dimensions: int) -> np.ndarray:
    matrix = np.empty((expected, dimensions), dtype=np.float32)
    seen = np.zeros(expected, dtype=bool)
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected:
            raise TransientError("malformed embedding response: missing or bad 'index'")
        if seen[index]:
            raise TransientError(f"malformed embedding response: index {index} repeated")
        seen[index] = True
        matrix[index] = _vector(item.get("embedding"), index, dimensions)
    return matrix


def _vector(raw: object, index: int, dimensions: int) -> np.ndarray:
    if isinstance(raw, str):
        try:
            # pybase64 (SIMD) decodes and validates an 8 KB vector in ~2 µs; the standard
            # library takes ~40 µs, a tenth of the worker's whole cost per chunk.
            buffer = pybase64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise TransientError(
                f"malformed embedding response: vector #{index} is not valid base64"
            ) from None
        if len(buffer) != dimensions * 4:
            raise TransientError(
                f"malformed embedding response: vector #{index} has {len(buffer) // 4} "
                f"dimensions, expected {dimensions}"
            )
        return np.frombuffer(buffer, dtype="<f4")
    if isinstance(raw, list):
        # A server that ignored encoding_format=base64: the floats are just as good.
        if len(raw) != dimensions or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw
        ):
            raise TransientError(
                f"malformed embedding response: vector #{index} is not {dimensions} numbers"
            )
        return np.asarray(raw, dtype=np.float32)
    raise TransientError(f"malformed embedding response: vector #{index} is missing")
