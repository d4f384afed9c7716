"""One remote call, made survivable: limiter, breaker, classified retries.

Only transient failures and rate limiting are retried here. Permanent errors
(invalid input, auth, quota) and bugs are raised at once: retrying them only
spends money and time. A 429 is paced through the shared limiter so every
caller backs off together, and does not use up the transient-failure budget.
A delay longer than ``max_wait`` is not slept inline: the error is raised with
its retry_after so the document is rescheduled instead of holding a worker.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from ingestd.shared.errors import ErrorClass, IngestError
from ingestd.shared.resilience.backoff import REQUEST_BACKOFF, Backoff
from ingestd.shared.resilience.breaker import CircuitBreaker
from ingestd.shared.resilience.classify import classify_exception
from ingestd.shared.resilience.ratelimit import RateLimiter

T = TypeVar("T")

Outcome = Literal["success", "retry", "giveup", "rejected"]


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """What happened to one attempt (for metrics and logs; carries no payload)."""

    operation: str
    attempt: int  # calls made so far, this one included (0 when rejected before any call)
    outcome: Outcome
    error: IngestError | None = None
    delay: float = 0.0  # seconds before the next attempt, for "retry"
    elapsed: float = 0.0  # seconds this attempt took

    @property
    def error_class(self) -> ErrorClass | None:
        return self.error.error_class if self.error is not None else None


EventCallback = Callable[[AttemptEvent], None]


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff = REQUEST_BACKOFF,
    breaker: CircuitBreaker | None = None,
    limiter: RateLimiter | None = None,
    max_attempts: int = 5,
    classify: Callable[[BaseException], IngestError] = classify_exception,
    on_event: EventCallback | None = None,
    tokens: int = 0,
    operation: str = "call",
    max_rate_limited: int = 20,
    max_wait: float = 60.0,
    attempt_timeout: float | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn`` until it succeeds or fails in a way retrying cannot fix.

    ``max_attempts`` bounds transient failures; ``max_rate_limited`` bounds 429s.
    ``tokens`` is what one call costs against the limiter's tokens/min budget.
    ``max_wait`` bounds any single wait (backoff, server delay, limiter queue):
    beyond it the error is raised with its retry_after for rescheduling.
    Raises the classified ``IngestError`` (chained to the original exception).
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    failures = 0
    rate_limited = 0
    calls = 0

    def emit(event: AttemptEvent) -> None:
        if on_event is not None:
            on_event(event)

    while True:
        if limiter is not None:
            try:
                await limiter.acquire(tokens, max_wait=max_wait)
            except IngestError as refused:
                emit(AttemptEvent(operation, calls, "rejected", refused))
                raise
        if breaker is not None:
            try:
                breaker.before_call()
            except IngestError as rejected:
                if limiter is not None:
                    limiter.refund(tokens)
                emit(AttemptEvent(operation, calls, "rejected", rejected))
                raise
        calls += 1
        started = clock()
        try:
            try:
                if attempt_timeout is None:
                    result = await fn()
                else:
                    async with asyncio.timeout(attempt_timeout):
                        result = await fn()
            finally:
                if limiter is not None:
                    limiter.complete(tokens)
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.release()
            raise
        except Exception as exc:
            elapsed = clock() - started
            error = classify(exc)
            if breaker is not None:
                breaker.record_failure(error)
            delay = _next_delay(error, failures + 1, rate_limited + 1, backoff, rng)
            if error.error_class is ErrorClass.RATE_LIMITED:
                rate_limited += 1
                give_up = rate_limited > max_rate_limited
                if limiter is not None:
                    # The whole process backs off, not just this caller.
                    limiter.on_rate_limited(delay)
            elif error.error_class is ErrorClass.TRANSIENT:
                failures += 1
                give_up = failures >= max_attempts
            else:
                give_up = True
            if give_up or delay > max_wait:
                if error.retry_after is None and delay > 0 and not give_up:
                    error.retry_after = delay
                emit(AttemptEvent(operation, calls, "giveup", error, elapsed=elapsed))
                if error is exc:
                    raise
                raise error from exc
            emit(AttemptEvent(operation, calls, "retry", error, delay=delay, elapsed=elapsed))
            if limiter is None or error.error_class is not ErrorClass.RATE_LIMITED:
                await sleep(delay)
            continue
        if breaker is not None:
            breaker.record_success()
        emit(AttemptEvent(operation, calls, "success", elapsed=clock() - started))
        return result


def _next_delay(
    error: IngestError,
    failure_number: int,
    rate_limited_number: int,
    backoff: Backoff,
    rng: random.Random | None,
) -> float:
    if error.error_class is ErrorClass.RATE_LIMITED:
        if error.retry_after is not None:
            return max(0.0, error.retry_after)
        return backoff.delay(rate_limited_number, rng)
    return backoff.delay(failure_number, rng, retry_after=error.retry_after)
