from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from ingestd.shared.errors import (
    AuthError,
    CircuitOpen,
    ErrorClass,
    IngestError,
    InvalidInput,
    QuotaExhausted,
    RateLimited,
    TransientError,
)
from ingestd.shared.resilience import (
    AttemptEvent,
    Backoff,
    BreakerState,
    CircuitBreaker,
    RateLimiter,
    call_with_retries,
)

from .conftest import run_virtual

FAST = Backoff(base=0.1, cap=1.0)


class Script:
    """A fake remote call failing with the given exceptions, then returning "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.call_times: list[float] = []

    async def __call__(self) -> str:
        self.calls += 1
        self.call_times.append(asyncio.get_running_loop().time())
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def collect() -> tuple[list[AttemptEvent], Callable[[AttemptEvent], None]]:
    events: list[AttemptEvent] = []
    return events, events.append


def test_transient_failures_are_retried_then_succeed() -> None:
    events, on_event = collect()
    script = Script(ConnectionResetError(), TimeoutError(), TransientError("HTTP 503"))

    async def main() -> str:
        return await call_with_retries(
            script, backoff=FAST, max_attempts=5, on_event=on_event, rng=random.Random(1)
        )

    assert run_virtual(main) == "ok"
    assert script.calls == 4
    assert [e.outcome for e in events] == ["retry", "retry", "retry", "success"]
    assert all(e.error_class is ErrorClass.TRANSIENT for e in events[:3])
    assert all(0 <= e.delay <= FAST.cap for e in events[:3])


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput("bad"),
        AuthError("401"),
        QuotaExhausted("insufficient_quota"),
        IngestError("bug", error_class=ErrorClass.INTERNAL),
    ],
)
def test_permanent_errors_are_raised_at_once(error: IngestError) -> None:
    events, on_event = collect()
    script = Script(error)

    async def main() -> str:
        return await call_with_retries(script, backoff=FAST, max_attempts=5, on_event=on_event)

    with pytest.raises(type(error)):
        run_virtual(main)
    assert script.calls == 1
    assert [e.outcome for e in events] == ["giveup"]


def test_transient_budget_is_bounded() -> None:
    script = Script(*[TransientError("HTTP 500") for _ in range(10)])

    async def main() -> str:
        return await call_with_retries(script, backoff=FAST, max_attempts=3)

    with pytest.raises(TransientError):
        run_virtual(main)
    assert script.calls == 3


def test_unclassified_exception_is_classified_and_chained() -> None:
    script = Script(ConnectionRefusedError())

    async def main() -> str:
        return await call_with_retries(script, backoff=FAST, max_attempts=1)

    with pytest.raises(TransientError) as info:
        run_virtual(main)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_rate_limited_honours_retry_after_and_spares_the_attempt_budget() -> None:
    script = Script(*[RateLimited("429", retry_after=2.5) for _ in range(6)])

    async def main() -> tuple[str, RateLimiter]:
        loop = asyncio.get_running_loop()
        limiter = RateLimiter(clock=loop.time)
        result = await call_with_retries(script, backoff=FAST, max_attempts=2, limiter=limiter)
        return result, limiter

    result, limiter = run_virtual(main)
    assert result == "ok"
    assert script.calls == 7
    gaps = [b - a for a, b in zip(script.call_times, script.call_times[1:], strict=False)]
    assert all(gap >= 2.5 for gap in gaps)
    assert limiter.stats.rate_limited_pauses == 6


def test_rate_limit_pause_holds_back_other_callers() -> None:
    async def main() -> tuple[list[float], float]:
        loop = asyncio.get_running_loop()
        limiter = RateLimiter(clock=loop.time)
        first = Script(RateLimited("429", retry_after=4.0))
        others = [Script() for _ in range(3)]

        async def other(script: Script) -> None:
            await asyncio.sleep(0.5)  # arrives while the pause is in force
            await call_with_retries(script, backoff=FAST, limiter=limiter)

        start = loop.time()
        await asyncio.gather(
            call_with_retries(first, backoff=FAST, limiter=limiter),
            *(other(s) for s in others),
        )
        return [s.call_times[0] - start for s in others], first.call_times[1] - start

    other_starts, retry_at = run_virtual(main)
    assert retry_at >= 4.0
    assert all(t >= 4.0 for t in other_starts)


def test_rate_limited_without_hint_backs_off() -> None:
    script = Script(RateLimited("429"), RateLimited("429"))

    async def main() -> str:
        return await call_with_retries(script, backoff=Backoff(base=1.0, cap=1.0), max_attempts=1)

    assert run_virtual(main) == "ok"
    assert script.calls == 3


def test_rate_limited_budget_is_bounded() -> None:
    script = Script(*[RateLimited("429", retry_after=0.1) for _ in range(10)])

    async def main() -> str:
        return await call_with_retries(script, backoff=FAST, max_rate_limited=3)

    with pytest.raises(RateLimited):
        run_virtual(main)
    assert script.calls == 4


def test_long_retry_after_is_not_slept_inline() -> None:
    events, on_event = collect()
    script = Script(RateLimited("429", retry_after=600.0))

    async def main() -> str:
        return await call_with_retries(script, backoff=FAST, max_wait=60.0, on_event=on_event)

    with pytest.raises(RateLimited) as info:
        run_virtual(main)
    assert info.value.retry_after == 600.0
    assert script.calls == 1
    assert events[-1].outcome == "giveup"


def test_a_long_limiter_queue_is_not_waited_inline() -> None:
    events, on_event = collect()

    async def main() -> Script:
        loop = asyncio.get_running_loop()
        limiter = RateLimiter(tpm=60_000, safety=1.0, clock=loop.time)  # 1,000 tokens/s
        await limiter.acquire(60_000)
        script = Script()
        with pytest.raises(RateLimited) as info:
            await call_with_retries(
                script, limiter=limiter, tokens=30_000, max_wait=10.0, on_event=on_event
            )
        assert info.value.retry_after == pytest.approx(30.0)
        return script

    assert run_virtual(main).calls == 0
    assert [e.outcome for e in events] == ["rejected"]


def test_breaker_opens_and_then_rejects_without_calling() -> None:
    async def main() -> tuple[CircuitBreaker, Script, Script, list[AttemptEvent]]:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker("svc", failure_threshold=3, reset_timeout=30.0, clock=loop.time)
        failing = Script(*[TransientError("HTTP 503") for _ in range(10)])
        with pytest.raises(CircuitOpen):
            await call_with_retries(failing, backoff=FAST, breaker=breaker, max_attempts=10)
        assert failing.calls == 3
        events, on_event = collect()
        healthy = Script()
        with pytest.raises(CircuitOpen) as info:
            await call_with_retries(healthy, backoff=FAST, breaker=breaker, on_event=on_event)
        assert info.value.retry_after is not None and info.value.retry_after > 0
        return breaker, failing, healthy, events

    breaker, _, healthy, events = run_virtual(main)
    assert healthy.calls == 0
    assert breaker.state is BreakerState.OPEN
    assert [e.outcome for e in events] == ["rejected"]


def test_breaker_closes_after_successful_trial() -> None:
    async def main() -> BreakerState:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker("svc", failure_threshold=1, reset_timeout=5.0, clock=loop.time)
        with pytest.raises(TransientError):
            await call_with_retries(Script(TransientError("x")), breaker=breaker, max_attempts=1)
        await asyncio.sleep(5.0)
        assert await call_with_retries(Script(), breaker=breaker) == "ok"
        return breaker.state

    assert run_virtual(main) is BreakerState.CLOSED


def test_rejected_call_refunds_the_limiter() -> None:
    async def main() -> float | None:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker("svc", failure_threshold=1, clock=loop.time)
        breaker.record_failure(ErrorClass.TRANSIENT)
        limiter = RateLimiter(rpm=60, tpm=1000, safety=1.0, clock=loop.time)
        with pytest.raises(CircuitOpen):
            await call_with_retries(Script(), breaker=breaker, limiter=limiter, tokens=1000)
        return limiter.levels()["tokens"]

    assert run_virtual(main) == pytest.approx(1000)


def test_attempt_timeout_is_a_transient_failure() -> None:
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(100)
        return "ok"

    async def main() -> str:
        return await call_with_retries(slow_then_fast, backoff=FAST, attempt_timeout=5.0)

    assert run_virtual(main) == "ok"
    assert calls == 2


def test_cancellation_releases_the_half_open_trial() -> None:
    async def main() -> bool:
        loop = asyncio.get_running_loop()
        breaker = CircuitBreaker("svc", failure_threshold=1, reset_timeout=1.0, clock=loop.time)
        breaker.record_failure(ErrorClass.TRANSIENT)
        await asyncio.sleep(1.0)

        async def hang() -> str:
            await asyncio.sleep(1000)
            return "never"

        task = asyncio.ensure_future(call_with_retries(hang, breaker=breaker))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return breaker.allow()

    assert run_virtual(main) is True
