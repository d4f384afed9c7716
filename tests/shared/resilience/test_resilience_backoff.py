from __future__ import annotations

import random

import pytest

from ingestd.shared.resilience import Backoff, document_backoff


def test_ceiling_grows_exponentially_then_caps() -> None:
    backoff = Backoff(base=0.5, cap=8.0, multiplier=2.0)
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.ceiling(10_000) == 8.0  # no overflow


def test_full_jitter_stays_within_bounds_and_spreads() -> None:
    backoff = Backoff(base=1.0, cap=30.0)
    rng = random.Random(42)
    for attempt in range(1, 12):
        draws = [backoff.delay(attempt, rng) for _ in range(500)]
        ceiling = backoff.ceiling(attempt)
        assert all(0.0 <= d <= ceiling for d in draws)
        # Full jitter: draws cover the range, not clustered at the ceiling.
        assert min(draws) < 0.1 * ceiling
        assert max(draws) > 0.9 * ceiling


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(base=0.5, cap=2.0)
    rng = random.Random(1)
    assert all(backoff.delay(1, rng, retry_after=5.0) == 5.0 for _ in range(50))
    # A small retry_after never shortens a longer jittered delay.
    delays = [backoff.delay(6, rng, retry_after=0.01) for _ in range(200)]
    assert all(d >= 0.01 for d in delays)
    assert max(delays) > 1.0


def test_deterministic_with_seeded_rng() -> None:
    backoff = Backoff()
    assert [backoff.delay(3, random.Random(7)) for _ in range(3)] == [
        backoff.delay(3, random.Random(7)) for _ in range(3)
    ]


def test_document_backoff_doubles_from_the_settings_base_to_their_cap() -> None:
    backoff = document_backoff(2.0, 600.0)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff.ceiling(20) == 600.0


def test_document_backoff_with_a_cap_below_the_base_waits_at_most_the_cap() -> None:
    backoff = document_backoff(10.0, 3.0)
    assert backoff.ceiling(1) == backoff.ceiling(5) == 3.0


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"base": 2, "cap": 1}, {"multiplier": 0.5}])
def test_invalid_parameters_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
