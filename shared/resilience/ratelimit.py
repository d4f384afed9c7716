"""Client-side pacing under a provider's requests/min and tokens/min limits.

Two token buckets (requests, tokens) mirror the provider's own accounting, so a
bulk ingestion sends at the budget's rate instead of bursting into 429 storms
and backing off (which wastes both time and budget). The buckets are corrected
from what the server says: ``x-ratelimit-limit-*`` (the account's real limits),
``x-ratelimit-remaining-*`` (usage by other processes on the same key), and a
429's retry-after, which pauses every caller until then.

One reservation rule: a request's tokens, sized from the same byte estimate the
server counts, are taken from the bucket *before* it is sent, and only when the
whole request fits in what the bucket holds. Several processes sharing one key
each own a ``share`` of the account: their buckets, and what they read from the
server's headers, are scaled by it, so two processes never both spend the same
free budget the server reports. A request larger than the bucket can ever hold
is not the limiter's to send: callers split it (``request_ceiling``) and
batchers shrink to what the bucket holds now (``request_room``).

Waiters are served first-come first-served so a large request is not starved
by a stream of small ones. Clock and sleep are injectable so the pacing maths
is tested without waiting.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace

from ingestd.shared.errors import RateLimited
from ingestd.shared.resilience.classify import lower_headers

SECONDS_PER_MINUTE = 60.0
# A batcher shrinks a request to what the bucket holds now, but not below this share
# of the bucket: a drained bucket should make one request wait, not send many crumbs
# that spend the requests/min budget.
MIN_ROOM_FRACTION = 0.25
# Waits shorter than this are rounding noise: sleeping them could spin forever on a
# clock too coarse to advance by that little.
_NEGLIGIBLE_WAIT_S = 1e-6


@dataclass(slots=True)
class LimiterStats:
    acquisitions: int = 0
    waited_acquisitions: int = 0
    total_wait_s: float = 0.0
    max_wait_s: float = 0.0
    requests_acquired: int = 0
    tokens_acquired: int = 0
    rate_limited_pauses: int = 0
    header_updates: int = 0
    refused: int = 0  # acquisitions that would have waited longer than their max_wait

    @property
    def mean_wait_s(self) -> float:
        return self.total_wait_s / self.acquisitions if self.acquisitions else 0.0


class _Bucket:
    """A token bucket whose level may go negative (debt) after an oversized draw."""

    __slots__ = ("capacity", "level", "rate", "updated", "window")

    def __init__(
        self, per_minute: float, now: float, burst: float | None = None, window: float = 60.0
    ) -> None:
        self.capacity = per_minute if burst is None else min(burst, per_minute)
        self.rate = per_minute / window
        self.window = window
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def wait_time(self, amount: float) -> float:
        # A draw larger than the whole bucket waits for a full bucket, then goes into debt.
        need = min(amount, self.capacity)
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate

    def resize(self, per_minute: float, burst: float | None = None) -> None:
        self.capacity = per_minute if burst is None else min(burst, per_minute)
        self.level = min(self.level, self.capacity)
        self.rate = per_minute / self.window


class RateLimiter:
    """Keeps one process's calls under requests/min and tokens/min.

    ``rpm``/``tpm`` of None mean "unknown until the server says": such a limit
    is learnt from the first ``x-ratelimit-limit-*`` header seen. Configured
    limits are upper bounds (the account's limits, or the part of them the
    deployment may use); the server's limit wins when lower. ``safety`` keeps a
    small margin below the limit so clock skew and estimate errors do not turn
    into 429s.

    ``request_burst`` caps how many requests may go back to back (default: a
    whole minute's budget, like the provider's own bucket). A provider that
    counts requests in a sliding window (LlamaParse: 50 per 10 s) needs a small
    burst, or a full bucket plus its refill would exceed the window's count.

    ``share`` is this process's part of the account (1/workers when the workers
    of a host split one key): the limits, configured or learnt, and the server's
    ``remaining-*`` are all multiplied by it. ``window`` is the length of the
    period the limits are counted over (the API's minute; tests shorten it).
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        safety: float = 0.97,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        max_sleep_slice: float = 1.0,
        request_burst: float | None = None,
        share: float = 1.0,
        window: float = SECONDS_PER_MINUTE,
        name: str = "",
    ) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be > 0 or None")
        if tpm is not None and tpm <= 0:
            raise ValueError("tpm must be > 0 or None")
        if not 0 < safety <= 1:
            raise ValueError("safety must be in (0, 1]")
        if request_burst is not None and request_burst < 1:
            raise ValueError("request_burst must be >= 1 or None")
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        if window <= 0:
            raise ValueError("window must be > 0")
        self.name = name
        self.share = share
        self.window = window
        self._request_burst = request_burst
        self.safety = safety
        self._clock = clock
        self._sleep = sleep
        self._max_sleep_slice = max_sleep_slice
        self._configured = {"requests": rpm, "tokens": tpm}
        self._server_limits: dict[str, float] = {}
        now = clock()
        self._buckets: dict[str, _Bucket | None] = {
            "requests": self._new_bucket("requests", rpm, now) if rpm else None,
            "tokens": self._new_bucket("tokens", tpm, now) if tpm else None,
        }
        self._paused_until = 0.0
        # Sent but not answered yet. Before a limit is known nothing is debited, so when the
        # first headers arrive these requests are spent on the server but not in our bucket.
        self._in_flight = {"requests": 0, "tokens": 0}
        # Sent before the limit was known: spent from this process's share once it is.
        self._unmetered = {"requests": 0.0, "tokens": 0.0}
        self._lock = asyncio.Lock()
        self._stats = LimiterStats()

    # -- observation -------------------------------------------------------

    @property
    def stats(self) -> LimiterStats:
        return replace(self._stats)

    @property
    def rpm(self) -> float | None:
        return self._effective_limit("requests")

    @property
    def tpm(self) -> float | None:
        return self._effective_limit("tokens")

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def levels(self) -> dict[str, float | None]:
        now = self._clock()
        result: dict[str, float | None] = {}
        for kind, bucket in self._buckets.items():
            if bucket is None:
                result[kind] = None
            else:
                bucket.refill(now)
                result[kind] = bucket.level
        return result

    def request_ceiling(self) -> int | None:
        """The most tokens one request may carry: what this process's bucket holds when
        full (None while the token limit is unknown). Larger requests must be split."""
        bucket = self._buckets["tokens"]
        return None if bucket is None else max(1, math.floor(bucket.capacity))

    def request_room(self) -> int | None:
        """The most tokens a request should carry if it is to go now: what the bucket
        holds at the moment, but not under ``MIN_ROOM_FRACTION`` of a full bucket
        (below that, waiting beats sending crumbs); None while the limit is unknown."""
        bucket = self._buckets["tokens"]
        if bucket is None:
            return None
        bucket.refill(self._clock())
        floor = bucket.capacity * MIN_ROOM_FRACTION
        return max(1, math.floor(max(floor, min(bucket.level, bucket.capacity))))

    # -- acquiring ---------------------------------------------------------

    async def acquire(self, tokens: int = 0, *, max_wait: float | None = None) -> float:
        """Wait until a request of ``tokens`` tokens fits, then debit it; returns seconds waited.

        The reservation is made before the request is sent and only once all of it fits
        in the bucket, so the bucket never goes below zero. The one exception is a
        request larger than ``request_ceiling()`` (a caller that did not split it): it
        waits for a full bucket and leaves the rest as debt, paid before anyone else
        is served.

        With ``max_wait``, a wait that would run longer raises ``RateLimited`` (with
        the expected wait as retry_after) instead, so a caller holding a document can
        reschedule it rather than sit on it.
        """
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        started = self._clock()
        if max_wait is not None and self._paused_until - started > max_wait:
            raise self._refuse(self._paused_until - started)
        queued = self._lock.locked()
        slept = False
        async with self._lock:
            while True:
                wait = self._wait_time(tokens)
                if wait <= _NEGLIGIBLE_WAIT_S:
                    break
                if max_wait is not None and self._clock() - started + wait > max_wait:
                    raise self._refuse(wait)
                slept = True
                await self._sleep(min(wait, self._max_sleep_slice))
            self._debit(1, tokens)
            self._in_flight["requests"] += 1
            self._in_flight["tokens"] += tokens
        waited = max(0.0, self._clock() - started) if (slept or queued) else 0.0
        stats = self._stats
        stats.acquisitions += 1
        stats.requests_acquired += 1
        stats.tokens_acquired += tokens
        if waited > 0:
            stats.waited_acquisitions += 1
            stats.total_wait_s += waited
            stats.max_wait_s = max(stats.max_wait_s, waited)
        return waited

    def settle(self, reserved_tokens: int, actual_tokens: int) -> None:
        """Correct a debit once the server reported the real usage."""
        bucket = self._buckets["tokens"]
        if bucket is None or actual_tokens == reserved_tokens:
            return
        bucket.refill(self._clock())
        bucket.level = min(bucket.capacity, bucket.level + reserved_tokens - actual_tokens)
        self._stats.tokens_acquired += actual_tokens - reserved_tokens

    def complete(self, tokens: int = 0, requests: int = 1) -> None:
        """The request acquired with ``tokens`` has been answered (or failed)."""
        self._in_flight["requests"] = max(0, self._in_flight["requests"] - requests)
        self._in_flight["tokens"] = max(0, self._in_flight["tokens"] - tokens)

    def refund(self, tokens: int = 0, requests: int = 1) -> None:
        """Give back the debit of an acquired request that was never sent."""
        self.complete(tokens, requests)
        now = self._clock()
        for kind, amount in (("requests", requests), ("tokens", tokens)):
            bucket = self._buckets[kind]
            if bucket is not None and amount:
                bucket.refill(now)
                bucket.level = min(bucket.capacity, bucket.level + amount)

    # -- feedback from the server -----------------------------------------

    def update_from_headers(
        self, headers: Mapping[str, str] | None, *, request_tokens: int | None = None
    ) -> None:
        """Adapt to ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.

        ``request_tokens``: the size of the request these headers answer, when that
        request is still counted in flight (not yet ``complete()``d). It matters when a
        limit is first learnt: the other requests in flight were sent without being
        debited, so they are taken off the new bucket.

        Afterwards remaining-* only ever lowers our level: requests we sent after the
        one answered are in our level but not yet in the server's count, so a higher
        remaining means nothing, while a lower one means another client shares the key.
        """
        lowered = lower_headers(headers)
        if not any(key.startswith("x-ratelimit-") for key in lowered):
            return
        self._stats.header_updates += 1
        now = self._clock()
        for kind in ("requests", "tokens"):
            limit = _number(lowered.get(f"x-ratelimit-limit-{kind}"))
            created = False
            if limit is not None and limit > 0:
                created = self._learn_limit(kind, limit, now)
            bucket = self._buckets[kind]
            if bucket is None:
                continue
            remaining = _number(lowered.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is None:
                continue
            if created:
                own = 0
                if request_tokens is not None:
                    own = 1 if kind == "requests" else request_tokens
                remaining -= max(0, self._in_flight[kind] - own) / self.share
            bucket.refill(now)
            # The server's remaining budget is the whole account's: each of the processes
            # sharing it may spend only its share, or two of them would both send into
            # the same free tokens and one would get a 429.
            # An exhausted limit needs no pause of its own: the empty bucket makes
            # the next caller wait just long enough for its request to fit.
            bucket.level = min(bucket.level, remaining * self.share)

    def on_rate_limited(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """A 429 arrived: hold every caller until the server's delay has passed."""
        self._stats.rate_limited_pauses += 1
        now = self._clock()
        lowered = lower_headers(headers)
        told_which = False
        for kind in ("requests", "tokens"):
            remaining = _number(lowered.get(f"x-ratelimit-remaining-{kind}"))
            if remaining is not None and remaining <= 0:
                told_which = True
                self._drain(kind, now)
        if not told_which:
            # Which limit was hit is unknown: our estimate of both was too high.
            for kind in ("requests", "tokens"):
                self._drain(kind, now)
        self.update_from_headers(headers)
        if retry_after is not None and retry_after > 0:
            self._paused_until = max(self._paused_until, now + retry_after)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    # -- internals ---------------------------------------------------------

    def _refuse(self, wait: float) -> RateLimited:
        self._stats.refused += 1
        who = f"{self.name}: " if self.name else ""
        return RateLimited(
            f"{who}client-side rate limit would hold this request for {wait:.1f}s",
            retry_after=wait,
        )

    def _wait_time(self, tokens: int) -> float:
        now = self._clock()
        wait = self._paused_until - now
        for kind, amount in (("requests", 1), ("tokens", tokens)):
            bucket = self._buckets[kind]
            if bucket is None or amount == 0:
                continue
            bucket.refill(now)
            wait = max(wait, bucket.wait_time(amount))
        return wait

    def _debit(self, requests: int, tokens: int) -> None:
        for kind, amount in (("requests", requests), ("tokens", tokens)):
            bucket = self._buckets[kind]
            if bucket is not None:
                bucket.level -= amount
            else:
                self._unmetered[kind] += amount

    def _drain(self, kind: str, now: float) -> None:
        bucket = self._buckets[kind]
        if bucket is not None:
            bucket.refill(now)
            bucket.level = min(bucket.level, 0.0)

    def _learn_limit(self, kind: str, server_limit: float, now: float) -> bool:
        """Adopt the server's limit; True when this created the bucket."""
        if self._server_limits.get(kind) == server_limit:
            return False
        self._server_limits[kind] = server_limit
        limit = min(server_limit, self._configured[kind] or server_limit)
        bucket = self._buckets[kind]
        if bucket is None:
            # First news of this limit: a full share less what this process sent before
            # knowing it (the server's remaining-* does not yet show what the other
            # sharers sent unmetered, so it cannot be trusted for that), then let
            # remaining-* (read right after this) lower it further.
            bucket = self._new_bucket(kind, limit, now)
            # (No deeper than empty: the server refuses what its bucket cannot hold.)
            bucket.level = max(0.0, bucket.level - self._unmetered[kind])
            self._unmetered[kind] = 0.0
            self._buckets[kind] = bucket
            return True
        bucket.refill(now)
        bucket.resize(limit * self.share * self.safety, self._burst(kind))
        return False

    def _burst(self, kind: str) -> float | None:
        return self._request_burst if kind == "requests" else None

    def _new_bucket(self, kind: str, account_limit: float, now: float) -> _Bucket:
        """This process's bucket: its share of the account's limit, less the safety margin."""
        per_window = account_limit * self.share * self.safety
        return _Bucket(per_window, now, self._burst(kind), self.window)

    def _effective_limit(self, kind: str) -> float | None:
        configured = self._configured[kind]
        server = self._server_limits.get(kind)
        if configured is None:
            return server
        if server is None:
            return configured
        return min(configured, server)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
