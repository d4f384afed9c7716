from __future__ import annotations

import pytest

from ingestd.shared.errors import CircuitOpen, ErrorClass, RateLimited
from ingestd.shared.resilience import BreakerState, CircuitBreaker

from .conftest import FakeClock


def make(clock: FakeClock, **kwargs: object) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        "openai",
        failure_threshold=kwargs.pop("failure_threshold", 3),  # type: ignore[arg-type]
        reset_timeout=kwargs.pop("reset_timeout", 10.0),  # type: ignore[arg-type]
        half_open_max_calls=kwargs.pop("half_open_max_calls", 1),  # type: ignore[arg-type]
        clock=clock,
        on_state_change=lambda name, old, new: changes.append((old.value, new.value)),
    )
    return breaker, changes


def test_opens_after_consecutive_transient_failures(clock: FakeClock) -> None:
    breaker, changes = make(clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure(ErrorClass.TRANSIENT)
    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()
    breaker.record_failure(ErrorClass.TRANSIENT)
    assert breaker.state is BreakerState.OPEN
    assert changes == [("closed", "open")]
    assert not breaker.allow()
    clock.advance(4.0)
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(6.0)
    assert info.value.error_class is ErrorClass.CIRCUIT_OPEN


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker, _ = make(clock)
    for _ in range(10):
        breaker.record_failure(ErrorClass.TRANSIENT)
        breaker.record_failure(ErrorClass.TRANSIENT)
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.RATE_LIMITED,
        ErrorClass.INVALID_INPUT,
        ErrorClass.AUTH,
        ErrorClass.QUOTA,
        ErrorClass.INTERNAL,
    ],
)
def test_only_transient_failures_count(clock: FakeClock, error_class: ErrorClass) -> None:
    breaker, _ = make(clock)
    for _ in range(50):
        breaker.record_failure(error_class)
    assert breaker.state is BreakerState.CLOSED


def test_accepts_an_error_instance(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1)
    breaker.record_failure(RateLimited("busy"))
    assert breaker.state is BreakerState.CLOSED


def test_half_open_trial_success_closes(clock: FakeClock) -> None:
    breaker, changes = make(clock, failure_threshold=1)
    breaker.record_failure(ErrorClass.TRANSIENT)
    clock.advance(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the one trial
    assert not breaker.allow()  # a second caller waits for the verdict
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_half_open_trial_failure_reopens_for_a_full_timeout(clock: FakeClock) -> None:
    breaker, changes = make(clock, failure_threshold=1)
    breaker.record_failure(ErrorClass.TRANSIENT)
    clock.advance(10.0)
    breaker.before_call()
    clock.advance(2.0)
    breaker.record_failure(ErrorClass.TRANSIENT)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(9.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.times_opened == 2
    assert changes[-2:] == [("half_open", "open"), ("open", "half_open")]


def test_half_open_limits_concurrent_trials(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1, half_open_max_calls=2)
    breaker.record_failure(ErrorClass.TRANSIENT)
    clock.advance(10.0)
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_neutral_outcome_frees_the_trial_slot(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1)
    breaker.record_failure(ErrorClass.TRANSIENT)
    clock.advance(10.0)
    breaker.before_call()
    breaker.record_failure(ErrorClass.RATE_LIMITED)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the slot was released


def test_abandoned_trial_expires(clock: FakeClock) -> None:
    breaker, _ = make(clock, failure_threshold=1)
    breaker.record_failure(ErrorClass.TRANSIENT)
    clock.advance(10.0)
    breaker.before_call()  # caller vanishes without a verdict
    assert not breaker.allow()
    clock.advance(10.0)
    assert breaker.allow()


def test_invalid_configuration_rejected(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0, clock=clock)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=0, clock=clock)
