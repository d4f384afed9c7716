from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from ingestd.shared.errors import RateLimited
from ingestd.shared.resilience import RateLimiter

from .conftest import FakeClock, run_virtual


def limiter(clock: FakeClock, rpm: float | None = None, tpm: float | None = None) -> RateLimiter:
    return RateLimiter(rpm, tpm, safety=1.0, clock=clock, sleep=clock.sleep, max_sleep_slice=1e9)


def test_burst_up_to_capacity_then_paced_by_tokens(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=6000)  # 100 tokens/s

    async def main() -> list[float]:
        return [await rl.acquire(6000), await rl.acquire(1000), await rl.acquire(500)]

    assert asyncio.run(main()) == pytest.approx([0.0, 10.0, 5.0])
    stats = rl.stats
    assert stats.acquisitions == 3
    assert stats.waited_acquisitions == 2
    assert stats.total_wait_s == pytest.approx(15.0)
    assert stats.max_wait_s == pytest.approx(10.0)
    assert stats.tokens_acquired == 7500


def test_requests_per_minute_pacing(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=60)

    async def main() -> None:
        for _ in range(60):
            assert await rl.acquire() == 0.0
        assert await rl.acquire() == pytest.approx(1.0)
        assert await rl.acquire() == pytest.approx(1.0)

    asyncio.run(main())


def test_both_limits_the_tighter_one_wins(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=600, tpm=60_000)  # 10 req/s, 1000 tokens/s

    async def main() -> None:
        await rl.acquire(60_000)
        assert await rl.acquire(10) == pytest.approx(0.01)  # tokens bind
        for _ in range(598):
            await rl.acquire(0)
        # 0.01 s of refill (0.1 request) happened during the first wait.
        assert await rl.acquire(0) == pytest.approx(0.09)  # requests bind

    asyncio.run(main())


def test_oversized_request_waits_for_full_bucket_then_goes_into_debt(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=1000)

    async def main() -> None:
        await rl.acquire(500)
        assert await rl.acquire(5000) == pytest.approx(30.0)  # refill to full (500 tokens)
        assert await rl.acquire(100) == pytest.approx((4000 + 100) * 60 / 1000)

    asyncio.run(main())


def test_unknown_limits_are_learnt_from_headers(clock: FakeClock) -> None:
    rl = limiter(clock)

    async def main() -> None:
        assert await rl.acquire(10**9) == 0.0  # nothing known yet: no pacing
        rl.complete(10**9)
        rl.update_from_headers(
            {
                "x-ratelimit-limit-requests": "3000",
                "x-ratelimit-limit-tokens": "60000",
                "x-ratelimit-remaining-requests": "2999",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "1m0s",
            }
        )
        assert rl.tpm == 60_000
        assert rl.rpm == 3000
        assert await rl.acquire(2000) == pytest.approx(2.0)

    asyncio.run(main())


def test_configured_limit_is_an_upper_bound_server_lower_wins(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=100_000)
    rl.update_from_headers({"X-RateLimit-Limit-Tokens": "1000000"})
    assert rl.tpm == 100_000
    rl.update_from_headers({"x-ratelimit-limit-tokens": "50000"})
    assert rl.tpm == 50_000
    assert rl.levels()["tokens"] == pytest.approx(50_000)


def test_remaining_header_lowers_our_level_but_never_raises_it(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=60_000)

    async def main() -> None:
        await rl.acquire(50_000)
        rl.update_from_headers({"x-ratelimit-remaining-tokens": "59000"})
        assert rl.levels()["tokens"] == pytest.approx(10_000)
        rl.update_from_headers({"x-ratelimit-remaining-tokens": "4000"})  # another process
        assert rl.levels()["tokens"] == pytest.approx(4_000)

    asyncio.run(main())


def test_settle_corrects_estimates(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=60_000)

    async def main() -> None:
        await rl.acquire(30_000)
        rl.settle(30_000, 20_000)
        assert rl.levels()["tokens"] == pytest.approx(40_000)
        rl.settle(1_000, 5_000)
        assert rl.levels()["tokens"] == pytest.approx(36_000)
        assert rl.stats.tokens_acquired == 24_000

    asyncio.run(main())


def test_rate_limited_pauses_every_caller(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=10_000, tpm=10_000_000)

    async def main() -> list[float]:
        rl.on_rate_limited(3.0)
        starts = clock.now
        finished: list[float] = []

        async def caller() -> None:
            await rl.acquire(10)
            finished.append(clock.now - starts)

        await asyncio.gather(*(caller() for _ in range(5)))
        return finished

    finished = asyncio.run(main())
    assert len(finished) == 5
    assert min(finished) >= 3.0
    assert rl.stats.rate_limited_pauses == 1


def test_first_headers_account_for_requests_sent_before_the_limit_was_known(
    clock: FakeClock,
) -> None:
    rl = limiter(clock)

    async def main() -> None:
        for _ in range(5):  # five requests of 1,000 tokens go out before any answer
            await rl.acquire(1000)
        # The first answer: the server had processed only that one request.
        rl.update_from_headers(
            {"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59000"},
            request_tokens=1000,
        )
        rl.complete(1000)
        # The four others are spent on the server too, though never debited here.
        assert rl.levels()["tokens"] == pytest.approx(55_000)

    asyncio.run(main())


def test_request_burst_keeps_a_sliding_window_count(clock: FakeClock) -> None:
    """50 uploads per 10 s counted in a sliding window: rate 49/10 s with a burst of 1."""
    rl = RateLimiter(
        rpm=49 * 6,
        safety=1.0,
        request_burst=1,
        clock=clock,
        sleep=clock.sleep,
        max_sleep_slice=1e9,
    )

    async def main() -> list[float]:
        sent = []
        for _ in range(200):
            await rl.acquire()
            sent.append(clock.now)
        return sent

    sent = asyncio.run(main())
    for i, start in enumerate(sent):
        in_window = sum(1 for t in sent[i:] if t < start + 10.0)
        assert in_window <= 50
    assert sent[-1] - sent[0] == pytest.approx(199 * 10 / 49)


def test_max_wait_refuses_instead_of_holding_the_caller(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=6000)  # 100 tokens/s

    async def main() -> None:
        await rl.acquire(6000)
        with pytest.raises(RateLimited) as info:
            await rl.acquire(3000, max_wait=10.0)  # would wait 30 s
        assert info.value.retry_after == pytest.approx(30.0)
        assert clock.now == 1000.0  # refused at once, nothing debited
        assert await rl.acquire(500, max_wait=10.0) == pytest.approx(5.0)
        rl.on_rate_limited(120.0)
        with pytest.raises(RateLimited):
            await rl.acquire(1, max_wait=60.0)

    asyncio.run(main())
    assert rl.stats.refused == 2


def test_refund_returns_capacity(clock: FakeClock) -> None:
    rl = limiter(clock, rpm=60, tpm=6000)

    async def main() -> None:
        await rl.acquire(6000)
        rl.refund(6000)
        assert await rl.acquire(6000) == 0.0

    asyncio.run(main())


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rpm=0)
    with pytest.raises(ValueError):
        RateLimiter(tpm=-1)
    with pytest.raises(ValueError):
        asyncio.run(RateLimiter().acquire(-5))


# -- a simulated provider -----------------------------------------------------------------


@dataclass
class SimServer:
    """A provider-side token bucket per minute, like the real account limit."""

    tpm: float
    rpm: float
    loop: asyncio.AbstractEventLoop

    def __post_init__(self) -> None:
        self.tokens = self.tpm
        self.requests = self.rpm
        self.updated = self.loop.time()
        self.accepted_tokens = 0
        self.accepted = 0
        self.rejected = 0

    def _refill(self) -> None:
        now = self.loop.time()
        elapsed = now - self.updated
        self.updated = now
        self.tokens = min(self.tpm, self.tokens + elapsed * self.tpm / 60)
        self.requests = min(self.rpm, self.requests + elapsed * self.rpm / 60)

    def handle(self, tokens: int) -> tuple[bool, dict[str, str], float]:
        self._refill()
        if self.tokens < tokens or self.requests < 1:
            self.rejected += 1
            need = max(tokens - self.tokens, 0) / (self.tpm / 60)
            return False, {"x-ratelimit-remaining-tokens": str(int(self.tokens))}, need
        self.tokens -= tokens
        self.requests -= 1
        self.accepted += 1
        self.accepted_tokens += tokens
        headers = {
            "x-ratelimit-limit-tokens": str(int(self.tpm)),
            "x-ratelimit-limit-requests": str(int(self.rpm)),
            "x-ratelimit-remaining-tokens": str(int(self.tokens)),
            "x-ratelimit-remaining-requests": str(int(self.requests)),
        }
        return True, headers, 0.0


@pytest.mark.parametrize(
    ("configured", "estimate_factor"),
    [(True, 1.0), (False, 1.0), (True, 1.15), (True, 0.9)],
)
def test_bulk_run_uses_at_least_95_percent_of_tpm_with_few_429s(
    configured: bool, estimate_factor: float
) -> None:
    """Eight concurrent senders, random request sizes, 0.3 s latency, 20 simulated minutes.

    ``estimate_factor`` models the client's pre-request token estimate being off
    (the server reports the true count afterwards and the limiter settles).
    """
    tpm, rpm, minutes = 1_000_000, 3_000, 20

    async def main() -> tuple[SimServer, RateLimiter]:
        loop = asyncio.get_running_loop()
        server = SimServer(tpm=tpm, rpm=rpm, loop=loop)
        rl = RateLimiter(rpm if configured else None, tpm if configured else None, clock=loop.time)
        rng = random.Random(5)
        deadline = loop.time() + minutes * 60

        async def sender() -> None:
            while loop.time() < deadline:
                actual = rng.randint(2_000, 30_000)
                estimate = int(actual * estimate_factor)
                await rl.acquire(estimate)
                await asyncio.sleep(0.15)  # request travels
                ok, headers, retry_after = server.handle(actual)
                await asyncio.sleep(0.15)  # response travels
                if ok:
                    rl.update_from_headers(headers, request_tokens=estimate)
                    rl.settle(estimate, actual)
                else:
                    rl.on_rate_limited(retry_after, headers)
                rl.complete(estimate)

        await asyncio.gather(*(sender() for _ in range(8)))
        return server, rl

    server, rl = run_virtual(main)
    budget = tpm + tpm * minutes  # the initial full bucket + the refill over the run
    utilisation = server.accepted_tokens / budget
    rejected_share = server.rejected / (server.accepted + server.rejected)
    assert utilisation >= 0.95, utilisation
    assert rejected_share <= 0.01, rejected_share
    assert rl.stats.waited_acquisitions > 0
