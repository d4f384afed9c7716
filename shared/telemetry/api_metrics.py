"""``api.<service>.*`` metrics from a client's per-attempt events, for every outside API."""

from __future__ import annotations

from collections.abc import Callable

from ingestd.shared.errors import ErrorClass
from ingestd.shared.resilience import AttemptEvent
from ingestd.shared.telemetry.metrics import Metrics


def attempt_metrics(metrics: Metrics, service: str) -> Callable[[AttemptEvent], None]:
    def on_event(event: AttemptEvent) -> None:
        called = event.outcome != "rejected"  # rejected: refused before any request was sent
        if called:
            metrics.timing(f"api.{service}.latency", event.elapsed * 1000.0)
        if event.outcome == "retry":
            metrics.incr(f"api.{service}.retries")
        status = event.error.http_status if event.error is not None else None
        if event.outcome == "success":
            metrics.incr(f"api.{service}.status.200")
        elif status is not None:
            metrics.incr(f"api.{service}.status.{status}")
        cls = event.error_class
        if cls is ErrorClass.RATE_LIMITED:
            metrics.incr(f"api.{service}.rate_limited")
        elif cls is not None and called and (status is None or status < 400):
            # No usable response: timeout, dropped connection, malformed reply.
            metrics.incr(f"api.{service}.errors.{cls}")

    return on_event
