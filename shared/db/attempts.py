"""How a failed attempt ends: retried, failed for good, or dead.

The one rule, decided from the error class, the attempts used and the budget. The
worker (``jobs.end_attempt``), the supervisor releasing a dead worker's documents
(``jobs.release_worker_leases``) and the parser webhook (``jobs.end_parked_attempt``)
call ``decide``; the lease reaper, one set-based statement, calls the SQL function
``ingestd_attempt_end`` (migration 0007) with the same inputs. A property test pins
the two to the same answer for every input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ingestd.shared.errors import ErrorClass

# The SQL statement of the rule, for statements that decide many rows at once.
SQL_FUNCTION = "ingestd_attempt_end"


class Ending(StrEnum):
    RETRY = "retry"  # back to a resting status, runnable again after a backoff
    FAILED = "failed"  # a permanent error class: retrying cannot help
    DEAD = "dead"  # retryable, but the attempt budget is spent


@dataclass(frozen=True)
class Decision:
    ending: Ending
    attempts: int  # the attempts used, counting the one that just ended if it counts


def counted(error_class: ErrorClass, attempts_before: int) -> int:
    """Attempts used once an attempt ending with ``error_class`` is counted."""
    return attempts_before + (1 if error_class.counts_attempt else 0)


def ending(retryable: bool, attempts: int, max_attempts: int) -> Ending:
    """The rule itself; ``attempts`` already counts the attempt that ended."""
    if not retryable:
        return Ending.FAILED
    if attempts >= max_attempts:
        return Ending.DEAD
    return Ending.RETRY


def decide(error_class: ErrorClass, attempts_before: int, max_attempts: int) -> Decision:
    attempts = counted(error_class, attempts_before)
    return Decision(ending(error_class.retryable, attempts, max_attempts), attempts)
