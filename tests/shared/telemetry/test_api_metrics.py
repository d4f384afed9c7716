"""One rule for ``api.<service>.*`` metrics, whichever outside API the client talks to."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ingestd.shared.errors import CircuitOpen, RateLimited, TransientError
from ingestd.shared.resilience import AttemptEvent
from ingestd.shared.telemetry.api_metrics import attempt_metrics
from ingestd.shared.telemetry.metrics import Metrics


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def sent(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except BlockingIOError:
            return out
        out.extend(data.decode("ascii").splitlines())


def names(lines: list[str]) -> list[str]:
    return [line.split(":", 1)[0].removeprefix("ingestd.") for line in lines]


@pytest.mark.parametrize("service", ["openai", "llamaparse"])
def test_each_outcome_counts_what_happened(sink: socket.socket, service: str) -> None:
    port = sink.getsockname()[1]
    on_event = attempt_metrics(
        Metrics.from_settings("127.0.0.1", port, "ingestd", "worker", 0), service
    )
    http_503 = TransientError("503 from the service")
    http_503.http_status = 503

    on_event(AttemptEvent("embed", 1, "retry", http_503, delay=1.0, elapsed=0.2))
    on_event(AttemptEvent("embed", 2, "retry", TransientError("timed out"), elapsed=0.3))
    on_event(AttemptEvent("embed", 2, "rejected", CircuitOpen("breaker open")))
    on_event(AttemptEvent("embed", 2, "rejected", RateLimited("budget spent")))
    on_event(AttemptEvent("embed", 3, "success", elapsed=0.1))

    assert names(sent(sink)) == [
        f"api.{service}.latency",
        f"api.{service}.retries",
        f"api.{service}.status.503",
        f"api.{service}.latency",
        f"api.{service}.retries",
        f"api.{service}.errors.transient",
        # a call refused before it was sent has no latency and is no error of the service
        f"api.{service}.rate_limited",
        f"api.{service}.latency",
        f"api.{service}.status.200",
    ]
