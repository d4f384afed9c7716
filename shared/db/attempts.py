"""How a failed attempt ends: retried, failed for good, or dead.

The one rule, decided from the error class, the attempts used, the budget and how long
the document has waited on an unavailable service. The worker (``jobs.end_attempt``),
the supervisor releasing a dead worker's documents (``jobs.release_worker_leases``) and
the parser webhook (``jobs.end_parked_attempt``) call ``decide``; the lease reaper, one
set-based statement, calls the SQL function ``ingestd_attempt_end`` (migration 0011)
with the same inputs. A property test pins the two to the same answer for every input.

Waiting: an open circuit costs no attempt (the document did nothing wrong), so without
a bound a service that never comes back would reschedule its documents forever. The
clock starts the first time a document is rescheduled for an unavailable service; a
counted attempt or a stage finishing clears it; past ``service_wait_horizon_seconds``
the document ends ``dead``, with the class of the unavailability.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from ingestd.shared.errors import ErrorClass

# The SQL statement of the rule, for statements that decide many rows at once.
SQL_FUNCTION = "ingestd_attempt_end"

# The classes that mean "the service is unavailable": rescheduled without an attempt,
# within the wait horizon. A 429 is not one: the service answered, and the rate limiter
# paces it; it neither starts nor clears the clock.
_WAITING = frozenset({ErrorClass.CIRCUIT_OPEN})


class Ending(StrEnum):
    RETRY = "retry"  # back to a resting status, runnable again after a backoff
    FAILED = "failed"  # a permanent error class: retrying cannot help
    DEAD = "dead"  # retryable, but the attempt budget or the wait horizon is spent


class Clock(StrEnum):
    """What an attempt's end does to the document's wait clock (``waiting_since``)."""

    START = "start"  # started now if not running already
    CLEAR = "clear"  # a counted attempt: the document is no longer waiting
    KEEP = "keep"  # neither


@dataclass(frozen=True)
class Decision:
    ending: Ending
    attempts: int  # the attempts used, counting the one that just ended if it counts
    waiting: bool = False  # it ended waiting on an unavailable service
    waited: float = 0.0  # seconds waited on the service so far (0: not waiting before)
    horizon: float = math.inf

    @property
    def waited_out(self) -> bool:
        """Dead because the wait horizon passed (not the attempt budget)."""
        return self.ending is Ending.DEAD and self.waited >= self.horizon


def waits(error_class: ErrorClass) -> bool:
    """Whether ``error_class`` reschedules the document as waiting on its service."""
    return error_class in _WAITING


def clock(error_class: ErrorClass) -> Clock:
    if waits(error_class):
        return Clock.START
    return Clock.CLEAR if error_class.counts_attempt else Clock.KEEP


def counted(error_class: ErrorClass, attempts_before: int) -> int:
    """Attempts used once an attempt ending with ``error_class`` is counted."""
    return attempts_before + (1 if error_class.counts_attempt else 0)


def ending(
    retryable: bool,
    attempts: int,
    max_attempts: int,
    waited: float = 0.0,
    horizon: float = math.inf,
) -> Ending:
    """The rule itself; ``attempts`` already counts the attempt that ended, ``waited``
    is how long the document has waited on its service (0 when it is not waiting)."""
    if not retryable:
        return Ending.FAILED
    if attempts >= max_attempts:
        return Ending.DEAD
    if waited >= horizon:
        return Ending.DEAD
    return Ending.RETRY


def decide(
    error_class: ErrorClass,
    attempts_before: int,
    max_attempts: int,
    *,
    waiting_for: float | None = None,
    horizon: float = math.inf,
) -> Decision:
    """``waiting_for``: seconds since the document started waiting on its service
    (None: it was not waiting). Only a waiting class keeps the clock running."""
    attempts = counted(error_class, attempts_before)
    waiting = waits(error_class)
    waited = (waiting_for or 0.0) if waiting else 0.0
    return Decision(
        ending(error_class.retryable, attempts, max_attempts, waited, horizon),
        attempts,
        waiting,
        waited,
        horizon,
    )


def next_try_within(decision: Decision, delay: float) -> float:
    """A waiting document's retry delay, cut so that it is tried again when its horizon
    arrives (then dead if the service is still unavailable), not one backoff later."""
    if not decision.waiting:
        return delay
    return max(0.0, min(delay, decision.horizon - decision.waited))
