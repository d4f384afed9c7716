"""A faithful local emulator of the OpenAI embeddings API (``POST /v1/embeddings``).

What it reproduces (see /work/shared/reference/peers.md, "OpenAI embeddings API"):

- Bearer auth against a configured key: missing or wrong -> 401, code ``invalid_api_key``.
- Models text-embedding-3-small (1536), text-embedding-3-large (3072),
  text-embedding-ada-002 (1536); an unknown model -> 404 ``model_not_found``; ``dimensions``
  only for the -3 models (ada-002 -> 400), and it shortens the vector the way the real models
  do: the first ``dimensions`` components of the full vector, re-normalised.
- ``input``: a string, a list of strings, a list of token ids, or a list of token-id lists.
  More than 2048 inputs, an empty input, or a malformed one -> 400 "'$.input' is invalid ...";
  an input over 8192 tokens (cl100k_base) -> 400 "This model's maximum context length ...";
  over 300,000 tokens per request judged by the byte estimate (``estimate_api_tokens``,
  0.25 token per UTF-8 byte; a token-id input counts its length) -> 400
  ``max_tokens_per_request`` "Requested N tokens, max 300000 tokens per request".
- ``encoding_format`` ``float`` (JSON numbers) or ``base64`` (little-endian float32 bytes).
- Vectors are deterministic and unit-norm: the same text (and model) always gives the same
  vector, whichever input form carried it (token ids are decoded to their text first).
  Components come from a counter-based hash (splitmix64) of a 64-bit BLAKE2b digest of the
  text, vectorised over the whole batch with numpy; they are uniform, not Gaussian, which no
  consumer of an embedding can tell from the outside. ``embedding_for()`` computes one.
- ``usage.prompt_tokens`` / ``total_tokens``: the real cl100k_base count (or the byte
  estimate when ``exact_usage`` is off, for load tests that need more than ~10k inputs/s).
- Rate limits: a request budget (``rpm``) and a token budget (``tpm``), each a bucket that
  refills continuously (a full budget per minute); a request costs 1 request and its
  estimated tokens. Every reply after auth carries ``x-ratelimit-limit-requests``/``-tokens``,
  ``x-ratelimit-remaining-requests``/``-tokens``, ``x-ratelimit-reset-requests``/``-tokens``
  (Go durations: time until the bucket is full again) and ``x-request-id``. Over budget ->
  429 ``rate_limit_exceeded`` "Rate limit reached for MODEL in organization ORG on tokens per
  min (TPM): Limit L, Used U, Requested R. Please try again in 2.812s. ..." with
  ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``. A request larger than
  the whole token budget gets the real "Request too large ..." 429, without a retry-after.
  ``None`` means no budget: the headers then report a nominal 1,000,000,000 that never drains.
  ``window_seconds`` (60, the API's minute) is the period a budget refills over; tests and
  benchmarks shorten it to see many windows in a short run.
- Faults (``OpenAIFault``): a queue ``config.faults`` (each request after auth takes the next
  one) and per-kind probabilities ``config.fault_rates`` rolled once per request on an RNG
  seeded with ``config.seed``. Kinds: forced 429 ``rate_limit_exceeded``, 429
  ``insufficient_quota``, 500, 503, slow (``slow_seconds`` then a normal reply), a dropped
  connection (socket aborted, no reply), and malformed 200 replies: invalid JSON, one
  embedding too few, wrong dimension, NaN in the first vector.
- ``latency`` seconds before every reply; ``GET /v1/models`` lists the three models.
- Routes answer with and without the ``/v1`` prefix, so the official client works with
  ``base_url`` set to either ``emulator.url`` or ``emulator.base_url``.

Counters are in ``emulator.stats`` (``OpenAIStats``): requests, per-status counts, 429s,
tokens and inputs served, and one ``RequestRecord`` per request (time, inputs, tokens,
status, fault, and the headers named in ``config.recorded_headers``, e.g. x-correlation-id).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pybase64
from aiohttp import web

from ingestd.shared.tokens import estimate_api_tokens, get_encoding
from tests.emulators._base import (
    DEFAULT_RECORDED_HEADERS,
    BaseStats,
    HTTPEmulator,
    RequestRecord,
    bearer_token,
    drop_connection,
    go_duration,
    recorded_headers,
    request_id,
)

DEFAULT_API_KEY = "sk-emulator-key"

MODELS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
_MODEL_CREATED = {
    "text-embedding-3-small": 1705948997,
    "text-embedding-3-large": 1705953180,
    "text-embedding-ada-002": 1671217299,
}

UNLIMITED_REPORTED = 1_000_000_000
_OFF_LOOP_BYTES = 64 * 1024

_INPUT_INVALID = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)
_KEY_HELP = "You can find your API key at https://platform.openai.com/account/api-keys."
_RATE_HELP = "Visit https://platform.openai.com/account/rate-limits to learn more."
_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


class OpenAIFault(StrEnum):
    RATE_LIMIT = "rate_limit"  # 429 rate_limit_exceeded whatever the budget says
    QUOTA = "quota"  # 429 insufficient_quota
    SERVER_ERROR = "500"
    UNAVAILABLE = "503"
    SLOW = "slow"
    DROP = "drop"
    INVALID_JSON = "invalid_json"
    WRONG_COUNT = "wrong_count"
    WRONG_DIMENSION = "wrong_dimension"
    NAN = "nan"


_BODY_FAULTS = frozenset(
    {
        OpenAIFault.INVALID_JSON,
        OpenAIFault.WRONG_COUNT,
        OpenAIFault.WRONG_DIMENSION,
        OpenAIFault.NAN,
    }
)


@dataclass
class OpenAIEmulatorConfig:
    api_key: str | None = DEFAULT_API_KEY  # None: any non-empty bearer token is accepted
    rpm: int | None = None
    tpm: int | None = None
    window_seconds: float = 60.0  # the budgets are per minute; shortened for tests
    latency: float = 0.0
    slow_seconds: float = 30.0
    forced_retry_after: float = 1.0  # what an injected RATE_LIMIT fault tells the client
    faults: deque[OpenAIFault] = field(default_factory=deque)
    fault_rates: dict[OpenAIFault, float] = field(default_factory=dict)
    seed: int = 0
    exact_usage: bool = True
    max_inputs: int = 2048
    max_input_tokens: int = 8192
    max_request_tokens: int = 300_000
    organization: str = "org-emulator"
    recorded_headers: tuple[str, ...] = DEFAULT_RECORDED_HEADERS


@dataclass
class OpenAIStats(BaseStats):
    tokens_served: int = 0
    inputs_served: int = 0

    @property
    def rate_limited(self) -> int:
        """429 replies of either kind (rate_limit_exceeded and insufficient_quota)."""
        return self.status_counts[429]


# -- deterministic vectors ---------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MAX_DIMS = max(MODELS.values())
with np.errstate(over="ignore"):
    _COLUMN_KEYS = np.arange(1, _MAX_DIMS // 2 + 2, dtype=np.uint64) * _GOLDEN


def _digest64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


_MODEL_SALTS = {model: _digest64(model.encode()) for model in MODELS}


def _seeds(texts: Sequence[str], model: str) -> np.ndarray:
    salt = _MODEL_SALTS[model]
    return np.fromiter(
        (_digest64(t.encode("utf-8", "surrogatepass")) ^ salt for t in texts),
        dtype=np.uint64,
        count=len(texts),
    )


def _vectors(seeds: np.ndarray, dims: int) -> np.ndarray:
    """Unit-norm float32 rows; column j depends only on (seed, j), so a prefix of the full
    vector re-normalised is exactly the shortened vector."""
    half = (dims + 1) // 2
    with np.errstate(over="ignore"):
        z = np.add.outer(seeds, _COLUMN_KEYS[:half])
        np.bitwise_xor(z, z >> np.uint64(30), out=z)
        np.multiply(z, _MIX1, out=z)
        np.bitwise_xor(z, z >> np.uint64(27), out=z)
        np.multiply(z, _MIX2, out=z)
        np.bitwise_xor(z, z >> np.uint64(31), out=z)
    # Each 64-bit word gives two 32-bit components: half the hashing per component.
    v = z.view("<i4")[:, :dims].astype(np.float32)
    v *= np.float32(2.0**-31)
    norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float32))
    v /= norms[:, None]
    return v


def embedding_for(
    text: str, model: str = "text-embedding-3-small", dimensions: int | None = None
) -> np.ndarray:
    """The float32 vector the emulator returns for ``text`` (for assertions in tests)."""
    return _vectors(_seeds([text], model), dimensions or MODELS[model])[0]


# -- rate limiting -----------------------------------------------------------------------------
class _Bucket:
    """A per-window budget that refills continuously at capacity/window per second."""

    def __init__(self, capacity: int, now: float, window: float = 60.0) -> None:
        self.capacity = capacity
        self.rate = capacity / window
        self.level = float(capacity)
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait(self, amount: float) -> float:
        return 0.0 if amount <= self.level else (amount - self.level) / self.rate

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate


@dataclass(frozen=True, slots=True)
class _Throttle:
    kind: str  # "requests" | "tokens"
    wait: float | None  # None: the request can never fit the budget
    limit: int
    used: int
    requested: int


class _Limiter:
    def __init__(self, clock: Callable[[], float], window: float = 60.0) -> None:
        self._clock = clock
        self.window = window
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None

    def _sync(self, rpm: int | None, tpm: int | None, now: float) -> None:
        # The config may change between requests; a changed budget starts full.
        window = self.window
        if rpm is None:
            self._requests = None
        elif self._requests is None or self._requests.capacity != rpm:
            self._requests = _Bucket(rpm, now, window)
        if tpm is None:
            self._tokens = None
        elif self._tokens is None or self._tokens.capacity != tpm:
            self._tokens = _Bucket(tpm, now, window)
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)

    def acquire(self, rpm: int | None, tpm: int | None, tokens: int) -> _Throttle | None:
        """Take 1 request and ``tokens`` from the budgets, or say why not."""
        self._sync(rpm, tpm, self._clock())
        req, tok = self._requests, self._tokens
        if tok is not None and tokens > tok.capacity:
            return _Throttle("tokens", None, tok.capacity, 0, tokens)
        throttles: list[_Throttle] = []
        if req is not None and (w := req.wait(1)) > 0:
            used = req.capacity - math.floor(req.level)
            throttles.append(_Throttle("requests", w, req.capacity, used, 1))
        if tok is not None and (w := tok.wait(tokens)) > 0:
            used = tok.capacity - math.floor(tok.level)
            throttles.append(_Throttle("tokens", w, tok.capacity, used, tokens))
        if throttles:
            return max(throttles, key=lambda t: t.wait or 0.0)
        if req is not None:
            req.level -= 1
        if tok is not None:
            tok.level -= tokens
        return None

    def headers(self, rpm: int | None, tpm: int | None) -> dict[str, str]:
        self._sync(rpm, tpm, self._clock())
        out: dict[str, str] = {}
        for name, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            if bucket is None:
                limit = remaining = UNLIMITED_REPORTED
                reset = 0.0
            else:
                limit, remaining = bucket.capacity, max(0, math.floor(bucket.level))
                reset = bucket.until_full()
            out[f"x-ratelimit-limit-{name}"] = str(limit)
            out[f"x-ratelimit-remaining-{name}"] = str(remaining)
            out[f"x-ratelimit-reset-{name}"] = go_duration(reset)
        return out


# -- errors ------------------------------------------------------------------------------------
def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json.dumps(body).encode()


class _Reject(Exception):
    """A request the API refuses: status and the real error body."""

    def __init__(self, status: int, body: bytes, n_inputs: int = 0, tokens: int = 0) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.n_inputs = n_inputs
        self.tokens = tokens


def _bad_request(message: str, code: str | None = None, param: str | None = None) -> _Reject:
    return _Reject(400, _error(message, "invalid_request_error", code, param))


@dataclass(frozen=True, slots=True)
class _Parsed:
    model: str
    texts: list[str]
    dims: int
    base64: bool
    estimated_tokens: int
    usage_tokens: int


# -- the emulator ------------------------------------------------------------------------------
class OpenAIEmulator(HTTPEmulator):
    def __init__(
        self,
        config: OpenAIEmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(host, port, max_body=256 * 1024 * 1024)
        self.config = config or OpenAIEmulatorConfig()
        self.stats = OpenAIStats()
        self._limiter = _Limiter(clock, self.config.window_seconds)
        self._rng_seed = self.config.seed
        self._rng = random.Random(self._rng_seed)

    @property
    def base_url(self) -> str:
        """``url`` + "/v1", like the real API's base URL; the bare ``url`` works as well."""
        return self.url + "/v1"

    def inject(self, fault: OpenAIFault, times: int = 1) -> None:
        """The next ``times`` requests (after auth) get ``fault``."""
        self.config.faults.extend([fault] * times)

    def _routes(self, app: web.Application) -> None:
        # Both prefixes: the official client appends "/embeddings" to whatever base_url it is
        # given, and callers may hand it either ``url`` or ``base_url``.
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/embeddings", self._embeddings)
            app.router.add_get(f"{prefix}/models", self._models)

    # -- request plumbing ----------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        token = bearer_token(request)
        if token is None:
            return False
        return self.config.api_key is None or token == self.config.api_key

    def _unauthorized(self, request: web.Request) -> web.Response:
        if bearer_token(request) is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
                + _KEY_HELP
            )
        else:
            # The real API echoes a masked key; the emulator echoes none of it.
            message = "Incorrect API key provided. " + _KEY_HELP
        body = _error(message, "invalid_request_error", "invalid_api_key")
        return self._reply(request, 401, body, {}, rate_headers=False)

    def _roll_fault(self) -> OpenAIFault | None:
        return self._next_fault(OpenAIFault, self.config)

    def _reply(
        self,
        request: web.Request,
        status: int,
        body: bytes,
        extra_headers: dict[str, str],
        *,
        rate_headers: bool = True,
        n_inputs: int = 0,
        tokens: int = 0,
        fault: OpenAIFault | None = None,
        started: float | None = None,
    ) -> web.Response:
        headers = {"x-request-id": request_id(), "openai-version": "2020-10-01"}
        headers["openai-organization"] = self.config.organization
        if started is not None:
            headers["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
        if rate_headers:
            headers.update(self._limiter.headers(self.config.rpm, self.config.tpm))
        headers.update(extra_headers)
        self._record(request, status, n_inputs, tokens, fault)
        return web.Response(
            status=status, body=body, headers=headers, content_type="application/json"
        )

    def _record(
        self,
        request: web.Request,
        status: int | None,
        n_inputs: int,
        tokens: int,
        fault: OpenAIFault | None,
    ) -> None:
        self.stats._record(
            RequestRecord(
                time=time.time(),
                method=request.method,
                path=request.path,
                status=status,
                headers=recorded_headers(request, self.config.recorded_headers),
                n_inputs=n_inputs,
                tokens=tokens,
                fault=None if fault is None else fault.value,
            )
        )

    # -- handlers ------------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        if not self._authorized(request):
            return self._unauthorized(request)
        data = [
            {"id": m, "object": "model", "created": _MODEL_CREATED[m], "owned_by": "system"}
            for m in MODELS
        ]
        body = json.dumps({"object": "list", "data": data}).encode()
        return self._reply(request, 200, body, {}, rate_headers=False)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        started = time.monotonic()
        if cfg.latency > 0:
            await asyncio.sleep(cfg.latency)
        if not self._authorized(request):
            return self._unauthorized(request)

        fault = self._roll_fault()
        if fault is OpenAIFault.DROP:
            self._record(request, None, 0, 0, fault)
            drop_connection(request)
            return web.Response(status=500)  # never reaches the client: the socket is gone
        if fault is OpenAIFault.SLOW:
            await asyncio.sleep(cfg.slow_seconds)
        early = self._early_fault(fault)
        if early is not None:
            status, body, headers = early
            return self._reply(request, status, body, headers, fault=fault, started=started)

        raw = await request.read()
        # Big batches are tokenised and rendered on a thread so the loop keeps answering
        # (tiktoken and numpy release the GIL for most of that work); small ones stay here.
        off_loop = len(raw) > _OFF_LOOP_BYTES
        try:
            parsed = await asyncio.to_thread(self._parse, raw) if off_loop else self._parse(raw)
            throttle = self._limiter.acquire(cfg.rpm, cfg.tpm, parsed.estimated_tokens)
            if throttle is not None:
                status, body, headers = self._throttled(parsed.model, throttle)
                return self._reply(
                    request,
                    status,
                    body,
                    headers,
                    n_inputs=len(parsed.texts),
                    tokens=parsed.estimated_tokens,
                    fault=fault,
                    started=started,
                )
        except _Reject as rej:
            return self._reply(
                request,
                rej.status,
                rej.body,
                {},
                n_inputs=rej.n_inputs,
                tokens=rej.tokens,
                fault=fault,
                started=started,
            )

        body_fault = fault if fault in _BODY_FAULTS else None
        if off_loop:
            body = await asyncio.to_thread(self._render, parsed, body_fault)
        else:
            body = self._render(parsed, body_fault)
        self.stats.tokens_served += parsed.usage_tokens
        self.stats.inputs_served += len(parsed.texts)
        return self._reply(
            request,
            200,
            body,
            {"openai-model": parsed.model},
            n_inputs=len(parsed.texts),
            tokens=parsed.usage_tokens,
            fault=fault,
            started=started,
        )

    def _early_fault(self, fault: OpenAIFault | None) -> tuple[int, bytes, dict[str, str]] | None:
        cfg = self.config
        if fault is OpenAIFault.QUOTA:
            return 429, _error(_QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota"), {}
        if fault is OpenAIFault.SERVER_ERROR:
            message = "The server had an error while processing your request. Sorry about that!"
            return 500, _error(message, "server_error"), {}
        if fault is OpenAIFault.UNAVAILABLE:
            return 503, _error("The server is overloaded or not ready yet.", "server_error"), {}
        if fault is OpenAIFault.RATE_LIMIT:
            wait = cfg.forced_retry_after
            message = (
                f"Rate limit reached in organization {cfg.organization} on requests per min "
                f"(RPM). Please try again in {go_duration(wait)}. {_RATE_HELP}"
            )
            body = _error(message, "requests", "rate_limit_exceeded")
            return 429, body, _retry_headers(wait)
        return None

    def _throttled(self, model: str, t: _Throttle) -> tuple[int, bytes, dict[str, str]]:
        org = self.config.organization
        unit = "requests per min (RPM)" if t.kind == "requests" else "tokens per min (TPM)"
        if t.wait is None:
            message = (
                f"Request too large for {model} in organization {org} on {unit}: "
                f"Limit {t.limit}, Requested {t.requested}. The input or output tokens must be "
                f"reduced in order to run successfully. {_RATE_HELP}"
            )
            return 429, _error(message, t.kind, "rate_limit_exceeded"), {}
        message = (
            f"Rate limit reached for {model} in organization {org} on {unit}: Limit {t.limit}, "
            f"Used {t.used}, Requested {t.requested}. Please try again in "
            f"{go_duration(t.wait)}. {_RATE_HELP}"
        )
        return 429, _error(message, t.kind, "rate_limit_exceeded"), _retry_headers(t.wait)

    # -- request validation --------------------------------------------------------------------
    def _parse(self, raw: bytes) -> _Parsed:
        cfg = self.config
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad_request(_BAD_JSON) from exc
        if not isinstance(payload, dict):
            raise _bad_request(_BAD_JSON)

        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise _bad_request("you must provide a model parameter")
        if model not in MODELS:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise _Reject(404, _error(message, "invalid_request_error", "model_not_found"))

        fmt = payload.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise _bad_request(
                f"Invalid value for 'encoding_format': {json.dumps(fmt)}. "
                "Supported values are: 'float' and 'base64'.",
                param="encoding_format",
            )

        dims = MODELS[model]
        requested_dims = payload.get("dimensions")
        if requested_dims is not None:
            if model not in _SHORTENABLE:
                raise _bad_request("This model does not support specifying dimensions.")
            if (
                not isinstance(requested_dims, int)
                or isinstance(requested_dims, bool)
                or not 1 <= requested_dims <= dims
            ):
                raise _bad_request(
                    f"Invalid value for 'dimensions' = {json.dumps(requested_dims)}. "
                    f"Must be an integer between 1 and {dims}.",
                    param="dimensions",
                )
            dims = requested_dims

        items = _normalise_inputs(payload.get("input"))
        if items is None or not items or len(items) > cfg.max_inputs:
            raise _bad_request(_INPUT_INVALID)

        texts: list[str] = []
        estimates: list[int] = []
        exact: list[int | None] = []
        encoding = get_encoding()
        for item in items:
            if isinstance(item, str):
                if not item:
                    raise _bad_request(_INPUT_INVALID)
                try:
                    estimates.append(estimate_api_tokens(item))
                except UnicodeEncodeError as exc:  # a lone surrogate cannot be sent as UTF-8
                    raise _bad_request(_INPUT_INVALID) from exc
                texts.append(item)
                exact.append(None)
            else:
                try:
                    text = encoding.decode(item)
                except (KeyError, ValueError, TypeError, OverflowError) as exc:
                    raise _bad_request(_INPUT_INVALID) from exc
                texts.append(text)
                estimates.append(len(item))
                exact.append(len(item))

        estimated = sum(estimates)
        if estimated > cfg.max_request_tokens:
            limit = cfg.max_request_tokens
            message = f"Requested {estimated} tokens, max {limit} tokens per request"
            raise _Reject(
                400,
                _error(message, "max_tokens_per_request", "max_tokens_per_request"),
                len(texts),
                estimated,
            )

        usage = 0
        for i, text in enumerate(texts):
            count = exact[i]
            # A token is at least one byte, so a text of at most max_input_tokens bytes
            # (estimate * 4 >= bytes) cannot be over the limit and needs no count for it.
            if count is None and (cfg.exact_usage or estimates[i] * 4 > cfg.max_input_tokens):
                count = len(encoding.encode_ordinary(text))
            if count is not None and count > cfg.max_input_tokens:
                raise _bad_request(
                    f"This model's maximum context length is {cfg.max_input_tokens} tokens, "
                    f"however you requested {count} tokens ({count} in your prompt; 0 for the "
                    "completion). Please reduce your prompt; or completion length.",
                )
            exact_known = exact[i] is not None or cfg.exact_usage
            usage += count if (exact_known and count is not None) else estimates[i]

        return _Parsed(model, texts, dims, fmt == "base64", estimated, usage)

    # -- response ------------------------------------------------------------------------------
    def _render(self, parsed: _Parsed, fault: OpenAIFault | None) -> bytes:
        vectors = _vectors(_seeds(parsed.texts, parsed.model), parsed.dims)
        if fault is OpenAIFault.WRONG_COUNT:
            vectors = vectors[:-1]
        elif fault is OpenAIFault.WRONG_DIMENSION:
            wrong = parsed.dims - 1 if parsed.dims > 1 else 2
            vectors = _vectors(_seeds(parsed.texts, parsed.model), wrong)
        elif fault is OpenAIFault.NAN:
            vectors[0, 0] = np.nan

        tail = (
            f'],"model":"{parsed.model}","usage":{{"prompt_tokens":{parsed.usage_tokens},'
            f'"total_tokens":{parsed.usage_tokens}}}}}'
        ).encode()
        # Joined once from zero-copy slices: each vector's bytes are copied once.
        parts: list[bytes | memoryview] = [b'{"object":"list","data":[']
        if parsed.base64:
            for i, encoded in enumerate(_base64_rows(vectors)):
                parts += (
                    b'%s{"object":"embedding","index":%d,"embedding":"' % (b"," if i else b"", i),
                    encoded,
                    b'"}',
                )
        else:
            parts.append(
                b",".join(
                    b'{"object":"embedding","index":%d,"embedding":%s}' % (i, _json_floats(row))
                    for i, row in enumerate(vectors.tolist())
                )
            )
        parts.append(tail)
        body = b"".join(parts)
        if fault is OpenAIFault.INVALID_JSON:
            return body[: max(1, len(body) // 2)]
        return body


def _base64_rows(vectors: np.ndarray) -> list[bytes] | list[memoryview]:
    """Each row as base64 of its little-endian float32 bytes.

    Rows whose byte length is a multiple of 3 (any dimension divisible by 3, as
    1536 and 3072 are) encode without padding, so one SIMD encode of the whole
    matrix, cut at row boundaries, gives exactly the per-row encodings at a
    fraction of the per-row cost: the emulator shares the benchmark's cores with
    the worker it serves."""
    data = np.ascontiguousarray(vectors, dtype="<f4")
    row_bytes = data.shape[1] * 4 if data.ndim == 2 else 0
    if not row_bytes or row_bytes % 3:
        return [base64.b64encode(row.tobytes()) for row in data]
    encoded = memoryview(pybase64.b64encode(data))
    step = row_bytes // 3 * 4
    return [encoded[i : i + step] for i in range(0, len(encoded), step)]


@functools.cache
def _float_format(dims: int) -> str:
    return "[" + ",".join(["%.9g"] * dims) + "]"


def _json_floats(row: list[float]) -> bytes:
    """A JSON array of float32 values; 9 significant digits read back to the same float32,
    and one %-format per row is several times faster than json.dumps."""
    if any(math.isnan(x) for x in row):
        return json.dumps(row).encode()  # json writes NaN (the NaN fault), %g would write nan
    return (_float_format(len(row)) % tuple(row)).encode()


def _retry_headers(wait: float) -> dict[str, str]:
    return {
        "retry-after": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
    }


def _is_token(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _normalise_inputs(raw: Any) -> list[str | list[int]] | None:
    """The input as a list of strings and token-id lists, or None when it has no valid shape."""
    if isinstance(raw, str):
        return [raw]
    if not isinstance(raw, list) or not raw:
        return None
    first = raw[0]
    if isinstance(first, str):
        return raw if all(isinstance(x, str) for x in raw) else None
    if _is_token(first):
        return [raw] if all(_is_token(x) for x in raw) else None
    if isinstance(first, list):
        ok = all(isinstance(x, list) and x and all(_is_token(t) for t in x) for x in raw)
        return raw if ok else None
    return None
