"""A circuit breaker per remote service.

When a service is down, every call would wait for a timeout and count an
attempt against a document that did nothing wrong. The breaker fails calls at
once with ``CircuitOpen`` (which costs no attempt) until a trial call shows the
service is back.

Only transient failures (network, timeout, 5xx, malformed replies) count: a 429
means the service is up but busy (the rate limiter handles that), and an
invalid input says nothing about the service's health.

Not thread-safe: one breaker belongs to one event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from ingestd.shared.errors import CircuitOpen, ErrorClass, IngestError

_COUNTED = frozenset({ErrorClass.TRANSIENT})


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


StateChangeCallback = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateChangeCallback | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be > 0")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._callbacks: list[StateChangeCallback] = []
        if on_state_change is not None:
            self._callbacks.append(on_state_change)
        self._state = BreakerState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        # Start times of trial calls in flight while half-open; a trial whose
        # caller vanished without reporting expires after reset_timeout.
        self._trials: list[float] = []
        self.times_opened = 0
        # The last failure that counted: what a CircuitOpen reports as the reason, so a
        # document resting on an open circuit records "connection refused", not "open".
        self.last_failure: str | None = None

    # -- observation -------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        self._advance()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    def add_listener(self, callback: StateChangeCallback) -> None:
        self._callbacks.append(callback)

    def retry_after(self) -> float:
        """Seconds until a call may be let through (0 when one would be now)."""
        self._advance()
        if self._state is BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout - self._clock())
        if self._state is BreakerState.HALF_OPEN and len(self._trials) >= self.half_open_max_calls:
            oldest = min(self._trials)
            return max(0.0, min(1.0, oldest + self.reset_timeout - self._clock()))
        return 0.0

    # -- gatekeeping -------------------------------------------------------

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open this reserves a trial slot."""
        self._advance()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if len(self._trials) < self.half_open_max_calls:
            self._trials.append(self._clock())
            return True
        return False

    def before_call(self) -> None:
        """``allow()`` that raises ``CircuitOpen`` (with retry_after) instead of returning False."""
        if not self.allow():
            wait = self.retry_after()
            if self.last_failure:
                message = f"{self.last_failure} (circuit '{self.name}' {self._state})"
            else:
                message = f"circuit '{self.name}' is {self._state}: service failing"
            raise CircuitOpen(message, retry_after=wait, service=self.name)

    # -- outcomes ----------------------------------------------------------

    def record_success(self) -> None:
        self._advance()
        self._consecutive_failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._trials.clear()
            self._transition(BreakerState.CLOSED)

    def record_failure(self, error: ErrorClass | IngestError | None = ErrorClass.TRANSIENT) -> None:
        """Report a failed call. Only transient failures count towards opening."""
        error_class = _error_class(error)
        self._advance()
        if error_class not in _COUNTED:
            # The service answered: neutral for its health; frees the trial slot.
            self.release()
            return
        if isinstance(error, IngestError):
            self.last_failure = error.message
        if self._state is BreakerState.HALF_OPEN:
            self._trip()
            return
        if self._state is BreakerState.OPEN:
            return
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.failure_threshold:
            self._trip()

    def release(self) -> None:
        """A call ended without a verdict (cancelled, or a neutral error): free its trial slot."""
        if self._trials:
            self._trials.pop(0)

    def reset(self) -> None:
        self._consecutive_failures = 0
        self._trials.clear()
        self._transition(BreakerState.CLOSED)

    # -- internals ---------------------------------------------------------

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._trials.clear()
        self._consecutive_failures = 0
        self.times_opened += 1
        self._transition(BreakerState.OPEN)

    def _advance(self) -> None:
        now = self._clock()
        if self._state is BreakerState.OPEN and now - self._opened_at >= self.reset_timeout:
            self._trials.clear()
            self._transition(BreakerState.HALF_OPEN)
        elif self._state is BreakerState.HALF_OPEN and self._trials:
            self._trials = [t for t in self._trials if now - t < self.reset_timeout]

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        for callback in list(self._callbacks):
            callback(self.name, old, new)


def _error_class(error: ErrorClass | IngestError | None) -> ErrorClass | None:
    if isinstance(error, IngestError):
        return error.error_class
    return error
