"""Worker memory: what to measure and when to act on it.

Measured: USS, the pages only this process holds, i.e. what killing it would free.
After ``fork`` a child's RSS also counts every page it still shares with the
supervisor, so an RSS ceiling would fire on a fresh worker; ``ru_maxrss`` is worse
(it starts at the parent's RSS). USS costs a read of ``/proc/<pid>/smaps``
(~1.6 ms for 400 MB), hence one sample per worker every ``memory_check_seconds``.

Two ceilings, as circus does with its strikes, so one spike does not cost a restart:

- soft: ``strikes`` consecutive samples above it ask the worker to recycle after its
  current batch (SIGUSR2): the document is finished, nothing is lost;
- hard: one sample above it and the worker is killed at once (SIGKILL): it is about to
  take the machine with it, and its document is released with ``ErrorClass.MEMORY``
  (an attempt counted, so a document that blows up every worker ends ``dead``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import psutil

from ingestd.shared.settings import Settings

MB = 1024 * 1024


class Verdict(Enum):
    OK = "ok"
    SOFT = "soft"  # over the soft ceiling for ``strikes`` samples in a row: recycle
    HARD = "hard"  # over the hard ceiling: kill now


@dataclass(frozen=True)
class MemoryLimits:
    soft_bytes: int
    hard_bytes: int
    strikes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryLimits:
        return cls(
            settings.memory_soft_mb * MB, settings.memory_hard_mb * MB, settings.memory_strikes
        )


@dataclass
class MemoryWatch:
    """One worker's hysteresis state: consecutive samples over the soft ceiling."""

    strikes: int = 0
    last_uss: int | None = None
    peak_uss: int = 0

    def observe(self, uss: int, limits: MemoryLimits) -> Verdict:
        self.last_uss = uss
        self.peak_uss = max(self.peak_uss, uss)
        if uss > limits.hard_bytes:
            return Verdict.HARD
        if uss > limits.soft_bytes:
            self.strikes += 1
            return Verdict.SOFT if self.strikes >= limits.strikes else Verdict.OK
        self.strikes = 0
        return Verdict.OK


def read_uss(process: psutil.Process) -> int:
    """USS in bytes. Raises ``psutil.NoSuchProcess`` (incl. zombies) when it is gone."""
    return int(process.memory_full_info().uss)


def megabytes(n: int | None) -> float | None:
    return None if n is None else round(n / MB, 1)
