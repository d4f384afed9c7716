"""The small, documented set of error classes every decision in ingestd is made on.

An error that reaches a document is always one of these classes, recorded on the
document row (``error_class``, ``error_message``) and in its event history.

| class | meaning | what happens |
|---|---|---|
| transient | network error, timeout, 5xx, malformed reply | retried with backoff (attempt++) |
| rate_limited | 429 rate_limit_exceeded, upload throttling | rescheduled, no attempt counted |
| circuit_open | the service's breaker is open | rescheduled, no attempt (up to a horizon) |
| invalid_input | the document itself is bad | ``failed`` at once |
| auth | 401/403: wrong or missing key | ``failed`` at once |
| quota | insufficient_quota / 402 out of credits | ``failed`` at once |
| internal | a bug in ingestd (unexpected exception) | retried within the attempt budget |
| lease_expired | a worker stopped renewing its lease | reclaimed (attempt++) |
| crash | the worker process died | released at once (attempt++) |
| memory | the worker passed its hard memory ceiling | released at once (attempt++) |
| deadline | a stage ran past its deadline | released at once (attempt++) |
| cancelled | an operator stopped the work | ``failed`` |

When retries are exhausted the document ends ``dead`` and keeps the class of the
last error, so "dead because of memory" is visible in one query.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    CIRCUIT_OPEN = "circuit_open"
    INVALID_INPUT = "invalid_input"
    AUTH = "auth"
    QUOTA = "quota"
    INTERNAL = "internal"
    LEASE_EXPIRED = "lease_expired"
    CRASH = "crash"
    MEMORY = "memory"
    DEADLINE = "deadline"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        return self not in _PERMANENT

    @property
    def counts_attempt(self) -> bool:
        """An open circuit or a provider's rate limit says nothing about the document,
        so it costs no attempt: a 429 storm must never exhaust anyone's budget."""
        return self not in (ErrorClass.CIRCUIT_OPEN, ErrorClass.RATE_LIMITED)


_PERMANENT = frozenset(
    {ErrorClass.INVALID_INPUT, ErrorClass.AUTH, ErrorClass.QUOTA, ErrorClass.CANCELLED}
)


class IngestError(Exception):
    """An error with a class. ``message`` is human-readable and must never carry
    document text, secrets or whole payloads: it is stored and reported."""

    error_class: ErrorClass = ErrorClass.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass | None = None,
        retry_after: float | None = None,
        service: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_class is not None:
            self.error_class = error_class
        # Seconds the remote side asked us to wait, when it said so.
        self.retry_after = retry_after
        # The HTTP status behind it, when a response was received.
        self.http_status: int | None = None
        # The remote service it came from (a breaker's name, e.g. "openai"), when one did:
        # how long a document may wait on an unavailable one is bounded per service.
        self.service = service

    def __str__(self) -> str:
        return f"{self.error_class}: {self.message}"


def unexpected(exc: BaseException) -> IngestError:
    """An exception no stage classified (a bug): recorded as ``internal``, retried."""
    return IngestError(f"{type(exc).__name__}: {exc}"[:500], error_class=ErrorClass.INTERNAL)


class TransientError(IngestError):
    error_class = ErrorClass.TRANSIENT


class RateLimited(IngestError):
    error_class = ErrorClass.RATE_LIMITED


class CircuitOpen(IngestError):
    error_class = ErrorClass.CIRCUIT_OPEN


class InvalidInput(IngestError):
    error_class = ErrorClass.INVALID_INPUT


class AuthError(IngestError):
    error_class = ErrorClass.AUTH


class QuotaExhausted(IngestError):
    error_class = ErrorClass.QUOTA


class ConfigError(Exception):
    """Bad or missing configuration: reported at start-up, before any work is taken."""


class NotFound(Exception):
    """What a command was asked about does not exist (a document id): the command line
    exits 1, as for failed work, not 2: the command itself was well formed."""


class LeaseLost(Exception):
    """Another worker now owns the document (our lease expired): abandon it quietly."""


def first_line(exc: BaseException) -> str:
    """An error's first line (PostgreSQL's detail lines can quote data), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def named_first_line(exc: BaseException) -> str:
    """``TypeError: first line of the message`` (the type alone when there is none):
    enough to recognise an error, never a traceback."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {first_line(exc)}" if text else type(exc).__name__
