"""When to respawn a dead child, and when to stop trying: pure arithmetic, no I/O.

A *failure* is any death the supervisor did not ask for (crash, signal, memory,
heartbeat, deadline, an unrequested exit). A failure is *rapid* when the child
lived less than ``window`` seconds: it never got established.

- A slot's consecutive rapid failures form a streak; the k-th one in a row waits
  ``min(cap, base * 2**(k-1))`` before the respawn. A failure after a long, healthy
  life restarts at once (its document was already released, and one crash in an
  hour is not a loop); a planned exit (recycle, reload, scale-down) resets the streak.
- ``limit`` rapid failures, all slots together, within the last ``window`` seconds
  mean a crash loop: the supervisor gives up and exits non-zero, so systemd (or
  the operator) sees a broken installation instead of a process that looks alive
  and does nothing. Like systemd's StartLimitBurst within StartLimitIntervalSec.
- A failure *charged to a document* (the worker died holding one) backs its slot
  off like any other but does not count toward ``limit``: the document pays for it
  with an attempt and ends ``dead`` after ``max_attempts``, so a handful of bomb
  documents cannot stop the daemon. Only failures with nothing in hand make a loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

# 2**60 times any sane base exceeds any cap; bounding the exponent avoids float overflow.
_MAX_EXPONENT = 60


def backoff_delay(streak: int, *, base: float, cap: float) -> float:
    """Seconds to wait before respawning after the ``streak``-th rapid failure in a row."""
    if streak <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(streak - 1, _MAX_EXPONENT))


@dataclass(frozen=True)
class RestartDecision:
    delay: float  # seconds before the respawn
    streak: int  # consecutive rapid failures of this slot (0 after a planned exit)
    rapid_failures: int  # counted rapid failures of all slots within the window
    give_up: bool  # crash loop: stop supervising and exit non-zero


@dataclass
class RestartPolicy:
    base: float
    cap: float
    limit: int
    window: float
    _streaks: dict[Hashable, int] = field(default_factory=dict)
    _rapid: deque[float] = field(default_factory=deque)

    def configure(self, *, base: float, cap: float, limit: int, window: float) -> None:
        """New settings (on reload); the history is kept."""
        self.base, self.cap, self.limit, self.window = base, cap, limit, window

    def record(
        self,
        key: Hashable,
        *,
        now: float,
        lifetime: float,
        failure: bool,
        charged_to_document: bool = False,
    ) -> RestartDecision:
        """Account for one death of the child in ``key`` (a slot) and decide what follows.
        ``charged_to_document``: the failure was a document's doing; back off, but it is
        not evidence of a crash loop."""
        self._forget_before(now - self.window)
        if not failure:
            self._streaks[key] = 0
            return RestartDecision(0.0, 0, len(self._rapid), give_up=False)
        if lifetime >= self.window:
            self._streaks[key] = 0
            return RestartDecision(0.0, 0, len(self._rapid), give_up=False)
        streak = self._streaks.get(key, 0) + 1
        self._streaks[key] = streak
        delay = backoff_delay(streak, base=self.base, cap=self.cap)
        if charged_to_document:
            return RestartDecision(delay, streak, len(self._rapid), give_up=False)
        self._rapid.append(now)
        rapid = len(self._rapid)
        return RestartDecision(delay, streak, rapid, give_up=rapid >= self.limit)

    def rapid_failures(self, now: float) -> int:
        self._forget_before(now - self.window)
        return len(self._rapid)

    def _forget_before(self, horizon: float) -> None:
        while self._rapid and self._rapid[0] < horizon:
            self._rapid.popleft()
