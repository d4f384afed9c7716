"""Exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the exponential ceiling) spreads
retries of many clients that failed together, which equal-jitter or fixed
delays do not. The same value object schedules in-call retries (sub-second to
seconds) and per-document retries (minutes to hours).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_shared_rng = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not self.base > 0:
            raise ValueError(f"backoff base must be > 0, got {self.base}")
        if not self.cap >= self.base:
            raise ValueError(f"backoff cap ({self.cap}) must be >= base ({self.base})")
        if not self.multiplier >= 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(0, attempt - 1)
        try:
            value = self.base * self.multiplier**exponent
        except OverflowError:
            return self.cap
        return min(self.cap, value)

    def delay(
        self,
        attempt: int,
        rng: random.Random | None = None,
        *,
        retry_after: float | None = None,
    ) -> float:
        """Seconds to wait after failed ``attempt``; never below the server's retry_after."""
        drawn = (rng or _shared_rng).uniform(0.0, self.ceiling(attempt))
        if retry_after is not None and retry_after > drawn:
            return float(retry_after)
        return drawn


# In-call retries of a single request: quick, bounded well under a lease.
REQUEST_BACKOFF = Backoff(base=0.5, cap=20.0, multiplier=2.0)


def document_backoff(base: float, cap: float) -> Backoff:
    """Rescheduling a whole document after a failed attempt: doubling from the
    settings' ``retry_base_seconds`` up to ``retry_max_seconds``.

    A cap configured below the base caps every delay at it (the ceiling is
    ``min(cap, ...)``), so it lowers the base rather than being refused.
    """
    return Backoff(base=min(base, cap), cap=cap, multiplier=2.0)
