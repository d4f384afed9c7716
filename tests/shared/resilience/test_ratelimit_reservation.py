"""The reservation rule: tokens reserved before sending, shares of one account, batches
shrunk to what the bucket holds; on a fake clock, a simulated server, and the emulator."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.shared.batching import BatchItem, BatchLimits, batch_weight, pack
from ingestd.shared.embedders.openai import OpenAIEmbedder
from ingestd.shared.resilience import RateLimiter
from ingestd.shared.resilience.ratelimit import MIN_ROOM_FRACTION
from tests.emulators import OpenAIEmulator, OpenAIEmulatorConfig, running
from tests.emulators.openai_api import DEFAULT_API_KEY

from .conftest import FakeClock, run_virtual


def limiter(clock: FakeClock, tpm: float | None = None, share: float = 1.0) -> RateLimiter:
    return RateLimiter(
        None, tpm, safety=1.0, share=share, clock=clock, sleep=clock.sleep, max_sleep_slice=1e9
    )


def test_a_share_scales_configured_and_learnt_limits(clock: FakeClock) -> None:
    configured = limiter(clock, tpm=600_000, share=0.25)
    assert configured.request_ceiling() == 150_000
    learnt = limiter(clock, share=0.25)
    assert learnt.request_ceiling() is None
    learnt.update_from_headers(
        {"x-ratelimit-limit-tokens": "600000", "x-ratelimit-remaining-tokens": "600000"}
    )
    assert learnt.tpm == 600_000  # the account's limit...
    assert learnt.request_ceiling() == 150_000  # ...of which this process spends a quarter


def test_the_servers_remaining_budget_is_split_between_the_sharers(clock: FakeClock) -> None:
    """Two processes reading remaining=100,000 must not both believe it is theirs."""
    rl = limiter(clock, tpm=600_000, share=0.5)
    rl.update_from_headers({"x-ratelimit-remaining-tokens": "100000"})
    assert rl.levels()["tokens"] == pytest.approx(50_000)


def test_room_is_what_the_bucket_holds_but_not_crumbs(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=60_000)  # 1,000 tokens/s

    async def main() -> None:
        assert rl.request_room() == 60_000
        await rl.acquire(30_000)
        assert rl.request_room() == 30_000
        await rl.acquire(29_000)
        assert rl.request_room() == 60_000 * MIN_ROOM_FRACTION  # a floor: wait, then send
        clock.advance(1.5)
        assert rl.request_room() == 60_000 * MIN_ROOM_FRACTION
        clock.advance(60)
        assert rl.request_room() == 60_000

    asyncio.run(main())


def test_pack_closes_a_batch_at_the_room_it_was_given() -> None:
    rooms = iter([1000, 250, None, 600])
    items = [BatchItem(i, "x" * 400, 100) for i in range(20)]  # 100 tokens each
    batches = list(pack(items, BatchLimits(max_inputs=8), lambda: next(rooms)))
    assert [len(b) for b in batches] == [8, 2, 8, 2]
    assert [k.key for b in batches for k in b] == list(range(20))


def test_the_embedder_splits_what_its_bucket_could_never_hold(clock: FakeClock) -> None:
    rl = limiter(clock, tpm=100_000, share=0.5)
    embedder = OpenAIEmbedder(DEFAULT_API_KEY, base_url="http://127.0.0.1:9", limiter=rl)
    assert embedder.max_request_tokens() == 50_000
    assert embedder.request_room() == 50_000


@settings(max_examples=40, deadline=None)
@given(
    processes=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 60_000), min_size=1, max_size=40),
    latency=st.floats(0.0, 3.0),
    learnt=st.booleans(),
)
def test_sharers_never_overdraw_the_account_and_every_request_goes(
    processes: int, sizes: list[int], latency: float, learnt: bool
) -> None:
    """Several processes, each with its share, send requests up to their ceiling against
    one server bucket: the server never refuses one (no window ever sees more than the
    budget), and every request is eventually sent."""
    tpm = 240_000

    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        level, updated = float(tpm), loop.time()
        accepted = refused = 0

        def server(tokens: int) -> tuple[bool, dict[str, str]]:
            nonlocal level, updated, accepted, refused
            level = min(tpm, level + (loop.time() - updated) * tpm / 60)
            updated = loop.time()
            ok = level >= tokens
            if ok:
                level -= tokens
                accepted += 1
            else:
                refused += 1
            remaining = str(max(0, math.floor(level)))
            return ok, {
                "x-ratelimit-limit-tokens": str(tpm),
                "x-ratelimit-remaining-tokens": remaining,
            }

        async def process(slot: int) -> None:
            rl = RateLimiter(
                None, None if learnt else tpm, share=1 / processes, safety=1.0, clock=loop.time
            )
            if learnt:  # what the first reply says, before any request of this process
                rl.update_from_headers({"x-ratelimit-limit-tokens": str(tpm)})
            ceiling = rl.request_ceiling()
            assert ceiling is not None
            for size in sizes[slot::processes]:
                size = min(size, ceiling)
                await rl.acquire(size)
                await asyncio.sleep(latency / 2)
                ok, headers = server(size)
                await asyncio.sleep(latency / 2)
                rl.update_from_headers(headers, request_tokens=size)
                rl.complete(size)
                assert ok

        await asyncio.gather(*(process(s) for s in range(processes)))
        return accepted, refused, len(sizes)

    accepted, refused, total = run_virtual(main)
    assert refused == 0
    assert accepted == total


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_reservation_against_the_emulator_at_several_batch_sizes(batch: int) -> None:
    """Two processes' embedders (each half the account) against the emulator with a small
    budget and a 1 s window: no 429 at any request size, every input embedded, and no
    more tokens accepted than the budget allowed."""
    tpm, window = 20_000, 1.0
    per_input = 4_000 // batch  # requests of ~4,000 tokens, a fifth of the budget
    n_requests = 15
    config = OpenAIEmulatorConfig(tpm=tpm, rpm=10_000, exact_usage=False, window_seconds=window)

    async def sender(api: OpenAIEmulator, slot: int) -> int:
        rl = RateLimiter(None, None, share=0.5, window=window, name="openai")
        embedder = OpenAIEmbedder(
            DEFAULT_API_KEY, base_url=api.base_url, dimensions=8, limiter=rl, max_wait=60
        )
        texts = [f"{slot:02d}{i:06d}".ljust(per_input * 4, "a") for i in range(batch)]
        items = (BatchItem(i, texts[i % batch], per_input) for i in range(batch * n_requests))
        embedded = 0
        try:
            for b in pack(items, BatchLimits(max_inputs=batch), embedder.request_room):
                assert batch_weight(b) <= tpm
                embedded += len(await embedder.embed([x.text for x in b]))
        finally:
            await embedder.aclose()
        return embedded

    with running(OpenAIEmulator(config)) as api:

        async def main() -> list[int]:
            return list(await asyncio.gather(sender(api, 0), sender(api, 1)))

        embedded = asyncio.run(main())
        records = [r for r in api.stats.records if r.path.endswith("/embeddings")]
    assert embedded == [batch * n_requests] * 2
    assert api.stats.rate_limited == 0
    accepted = [r for r in records if r.status == 200]
    span = max(r.time for r in accepted) - min(r.time for r in accepted)
    # The server's bucket: full at the start, then refilled over the run (+ rounding slack).
    assert sum(r.tokens for r in accepted) <= tpm + tpm / window * span + 2 * batch
