"""Making calls to paid remote services correct and survivable.

- ``classify``: HTTP responses and exceptions -> classified ``IngestError``.
- ``backoff``: exponential backoff with full jitter.
- ``breaker``: a circuit breaker per service.
- ``ratelimit``: client-side requests/min + tokens/min pacing.
- ``retry``: ``call_with_retries`` tying them together.
"""

from ingestd.shared.resilience.backoff import REQUEST_BACKOFF, Backoff, document_backoff
from ingestd.shared.resilience.breaker import BreakerState, CircuitBreaker
from ingestd.shared.resilience.classify import classify_exception, classify_http, retry_after_from
from ingestd.shared.resilience.durations import (
    parse_go_duration,
    parse_retry_after,
    parse_try_again_in,
)
from ingestd.shared.resilience.ratelimit import LimiterStats, RateLimiter
from ingestd.shared.resilience.retry import AttemptEvent, call_with_retries

__all__ = [
    "REQUEST_BACKOFF",
    "AttemptEvent",
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
    "LimiterStats",
    "RateLimiter",
    "call_with_retries",
    "classify_exception",
    "classify_http",
    "document_backoff",
    "parse_go_duration",
    "parse_retry_after",
    "parse_try_again_in",
    "retry_after_from",
]
