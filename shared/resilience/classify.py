"""Turning whatever a remote call produced into one classified ``IngestError``.

Every retry, breaker and scheduling decision is made on the class, so this
module is the single place where HTTP statuses, provider error codes and
network exceptions are interpreted. Messages carry at most the provider's own
error message (redacted, truncated) and its request id: never payloads or keys.
"""

from __future__ import annotations

import errno
import json
import re
import socket
import ssl
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ingestd.shared.errors import (
    AuthError,
    ErrorClass,
    IngestError,
    InvalidInput,
    QuotaExhausted,
    RateLimited,
    TransientError,
)
from ingestd.shared.resilience.durations import (
    parse_go_duration,
    parse_retry_after,
    parse_try_again_in,
)

MAX_PROVIDER_MESSAGE = 200

_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "quota_exceeded"})
# Provider messages sometimes echo a (masked) key, e.g. "Incorrect API key provided: sk-ab***yz".
_SECRET_PATTERNS = (
    re.compile(r"\b(?:sk|llx|rk|pk)-[A-Za-z0-9_*\-.]{3,}"),
    re.compile(r"(?i)\bbearer\s+\S+"),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a service is reached, as messages name it: what it is to ingestd and its
    origin (scheme, host, port; never credentials, path or query)."""

    what: str  # e.g. "embedding API"
    origin: str  # e.g. "http://127.0.0.1:8080"

    @classmethod
    def of(cls, what: str, url: str | None) -> Endpoint | None:
        if not url:
            return None
        parts = urlsplit(url)
        if not parts.scheme or not parts.hostname:
            return None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        try:
            port = parts.port
        except ValueError:  # a malformed port: name the host alone
            port = None
        return cls(what, f"{parts.scheme}://{host}" + (f":{port}" if port else ""))


def classify_http(
    status: int,
    body: bytes | str | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    *,
    service: str | None = None,
) -> IngestError:
    """Classify a non-successful (or unreadable) HTTP response; the error keeps the
    status in ``http_status`` (for per-status metrics)."""
    error = _classify_http(status, body, headers, service=service)
    error.http_status = status
    error.service = service
    return error


def _classify_http(
    status: int,
    body: bytes | str | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    *,
    service: str | None = None,
) -> IngestError:
    """Classify a non-successful (or unreadable) HTTP response.

    A 2xx/3xx status reaching here means the body could not be used, which is a
    malformed response: transient, since a retry usually gets a good one.
    """
    lowered = _lower_headers(headers)
    request_id = lowered.get("x-request-id") or lowered.get("request-id")
    parsed, parse_ok = _parse_body(body)
    provider_message, code = _error_details(parsed)
    prefix = f"{service}: " if service else ""
    detail = _detail(provider_message, request_id)

    if 200 <= status < 400:
        return TransientError(f"{prefix}malformed response (HTTP {status}){detail}")

    if status == 429:
        if code in _QUOTA_CODES:
            return QuotaExhausted(f"{prefix}quota exhausted (HTTP 429 {code}){detail}")
        retry_after = retry_after_from(lowered, provider_message)
        return RateLimited(f"{prefix}rate limited (HTTP 429){detail}", retry_after=retry_after)
    if status == 402:
        return QuotaExhausted(f"{prefix}out of credits (HTTP 402){detail}")
    if status in (401, 403):
        return AuthError(f"{prefix}not authorised (HTTP {status}){detail}")
    if status in (400, 404, 413, 415, 422):
        what = "unparseable error body" if not parse_ok else "request rejected"
        return InvalidInput(f"{prefix}{what} (HTTP {status}){detail}")
    if status in (408, 409, 425) or status >= 500:
        if not parse_ok:
            detail = f" (malformed response body){detail}"
        retry_after = retry_after_from(lowered, None, use_reset_headers=False)
        message = f"{prefix}server error (HTTP {status}){detail}"
        return TransientError(message, retry_after=retry_after)
    # An unexpected 4xx: the request is wrong in a way retrying cannot fix.
    return IngestError(
        f"{prefix}unexpected HTTP {status}{detail}", error_class=ErrorClass.INVALID_INPUT
    )


def classify_exception(
    exc: BaseException, *, service: str | None = None, endpoint: Endpoint | None = None
) -> IngestError:
    """Classify an exception raised while calling a remote service.

    A network failure is named by its root cause (refused, DNS, TLS, reset...), found
    anywhere in the exception's chain: HTTP clients re-wrap it, and one of them reports
    a refused connection as a connect *timeout*, which would send an operator looking
    for a slow service instead of a missing one."""
    if isinstance(exc, IngestError):
        return exc
    error = _classify_exception(exc, service, endpoint)
    error.service = service
    return error


def _classify_exception(
    exc: BaseException, service: str | None, endpoint: Endpoint | None
) -> IngestError:
    prefix = f"{service}: " if service else ""
    cause = network_cause(exc)
    if cause is not None:
        return TransientError(prefix + cause.describe(endpoint))

    openai = sys.modules.get("openai")
    if openai is not None:
        classified = _classify_openai(openai, exc, service)
        if classified is not None:
            return classified

    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        classified = _classify_aiohttp(aiohttp, exc, service)
        if classified is not None:
            return classified

    httpx = sys.modules.get("httpx2") or sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        return TransientError(f"{prefix}network error ({type(exc).__name__})")

    if isinstance(exc, TimeoutError):
        return TransientError(f"{prefix}request timed out")
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return TransientError(f"{prefix}malformed response ({type(exc).__name__})")
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return TransientError(f"{prefix}network error ({type(exc).__name__})")
    # str(exc) of an arbitrary exception may hold payload text, so only the type is kept.
    return IngestError(
        f"{prefix}unexpected {type(exc).__name__} while calling the service",
        error_class=ErrorClass.INTERNAL,
    )


@dataclass(frozen=True, slots=True)
class NetworkCause:
    """The root of a failed connection, in words an operator can act on."""

    reason: str  # "connection refused", "DNS lookup failed", ...
    # True: no connection was ever made (the service is unreachable from here);
    # False: a connection was made and then lost.
    unreachable: bool

    def describe(self, endpoint: Endpoint | None) -> str:
        if endpoint is None:
            return f"{'unreachable' if self.unreachable else 'connection lost'}: {self.reason}"
        if self.unreachable:
            return f"{endpoint.what} unreachable at {endpoint.origin}: {self.reason}"
        return f"{endpoint.what} at {endpoint.origin}: {self.reason}"


_UNREACHABLE_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}
_LOST_ERRNOS = {
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by peer (broken pipe)",
}


def network_cause(exc: BaseException) -> NetworkCause | None:
    """The root network cause of ``exc``, innermost first, or None when its chain holds
    none (then it is classified by its own type)."""
    for link in reversed(list(_chain(exc))):
        cause = _cause_of(link)
        if cause is not None:
            return cause
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from (or during), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        following = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
        # aiohttp keeps the OSError of a failed connect in ``os_error`` as well.
        nested = getattr(current, "os_error", None)
        if following is None and isinstance(nested, BaseException):
            following = nested
        current = following


def _cause_of(exc: BaseException) -> NetworkCause | None:
    if isinstance(exc, socket.gaierror):
        return NetworkCause("DNS lookup failed", unreachable=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or "certificate not trusted"
        return NetworkCause(f"TLS certificate rejected ({detail})", unreachable=True)
    if isinstance(exc, ssl.SSLError):
        return NetworkCause(f"TLS handshake failed ({exc.reason or 'SSL error'})", unreachable=True)
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _UNREACHABLE_ERRNOS:
            return NetworkCause(_UNREACHABLE_ERRNOS[exc.errno], unreachable=True)
        if exc.errno in _LOST_ERRNOS:
            return NetworkCause(_LOST_ERRNOS[exc.errno], unreachable=False)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return NetworkCause("DNS lookup failed", unreachable=True)
        if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
            return NetworkCause("TLS handshake failed", unreachable=True)
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return NetworkCause("server closed the connection", unreachable=False)
    return None


def retry_after_from(
    headers: Mapping[str, str], message: str | None = None, *, use_reset_headers: bool = True
) -> float | None:
    """The server's requested delay, most precise source first.

    ``headers`` must have lower-case keys (see ``lower_headers``).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if value >= 0:
            return value / 1000.0
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    from_message = parse_try_again_in(message)
    if from_message is not None:
        return from_message
    return _reset_from_headers(headers) if use_reset_headers else None


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return _lower_headers(headers)


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    return text


def safe_message(text: str | None, limit: int = MAX_PROVIDER_MESSAGE) -> str | None:
    if not text:
        return None
    cleaned = redact(" ".join(str(text).split()))
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


def _reset_from_headers(headers: Mapping[str, str]) -> float | None:
    """When no retry-after was given: the reset time of the exhausted limit."""
    candidates: list[float] = []
    for kind in ("requests", "tokens"):
        reset = parse_go_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is None:
            continue
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            return reset
        candidates.append(reset)
    # Neither limit reports zero remaining: the soonest reset is the best guess.
    return min(candidates) if candidates else None


def _lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {str(key).lower(): str(value) for key, value in headers.items()}


def _parse_body(body: bytes | str | Mapping[str, Any] | None) -> tuple[Any, bool]:
    if body is None:
        return None, True
    if isinstance(body, Mapping):
        return body, True
    if isinstance(body, (bytes, bytearray, memoryview)):
        if not body:
            return None, True
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return None, False
    else:
        text = body
    if not text.strip():
        return None, True
    try:
        return json.loads(text), True
    except ValueError:
        return None, False


def _error_details(parsed: Any) -> tuple[str | None, str | None]:
    """(provider message, provider code) from OpenAI- or FastAPI-style error bodies."""
    if not isinstance(parsed, Mapping):
        return None, None
    error = parsed.get("error", parsed)
    message: Any = None
    code: Any = None
    if isinstance(error, Mapping):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        if error.get("type") in _QUOTA_CODES:
            code = error.get("type")
    elif isinstance(error, str):
        message = error
    if not isinstance(message, str):
        detail = parsed.get("detail")
        if isinstance(detail, str):
            message = detail
        elif isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
            message = detail[0].get("msg")
    if code is None:
        code = parsed.get("code")
    return (
        safe_message(message) if isinstance(message, str) else None,
        str(code) if isinstance(code, (str, int)) else None,
    )


def _detail(provider_message: str | None, request_id: str | None) -> str:
    parts = []
    if provider_message:
        parts.append(provider_message)
    if request_id:
        parts.append(f"request id {safe_message(request_id, 80)}")
    return ": " + "; ".join(parts) if parts else ""


def _classify_openai(openai: Any, exc: BaseException, service: str | None) -> IngestError | None:
    prefix = f"{service}: " if service else ""
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        try:
            body: Any = response.content
        except Exception:  # a streamed response that was never read
            body = exc.body if isinstance(exc.body, Mapping) else None
        return classify_http(exc.status_code, body, response.headers, service=service)
    if isinstance(exc, openai.APITimeoutError):
        return TransientError(f"{prefix}request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        reason = type(cause).__name__ if cause is not None else "connection error"
        return TransientError(f"{prefix}network error ({reason})")
    if isinstance(exc, openai.APIResponseValidationError):
        return TransientError(f"{prefix}malformed response (schema validation failed)")
    return None


def _classify_aiohttp(aiohttp: Any, exc: BaseException, service: str | None) -> IngestError | None:
    prefix = f"{service}: " if service else ""
    if isinstance(exc, aiohttp.ContentTypeError):
        return TransientError(f"{prefix}malformed response (unexpected content type)")
    if isinstance(exc, aiohttp.ClientResponseError):
        return classify_http(exc.status, None, exc.headers or {}, service=service)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return TransientError(f"{prefix}request timed out")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransientError(f"{prefix}malformed response (truncated or corrupt body)")
    if isinstance(exc, aiohttp.ClientError):
        return TransientError(f"{prefix}network error ({type(exc).__name__})")
    return None
