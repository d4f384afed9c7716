"""One rule for ``api.<service>.*`` metrics, whichever outside API the client talks to."""

from __future__ import annotations

import socket

import pytest

from ingestd.shared.errors import CircuitOpen, RateLimited, TransientError
from ingestd.shared.resilience import AttemptEvent
from ingestd.shared.telemetry.api_metrics import attempt_metrics
from tests.shared.telemetry.statsd_sink import client, recv


def sent(sock: socket.socket) -> list[str]:
    """Every line the sink received, and proof that nothing more is on its way."""
    out: list[str] = []
    sock.setblocking(False)  # loopback datagrams are queued by the time send() returns
    while True:
        try:
            out.extend(recv(sock).splitlines())
        except BlockingIOError:
            return out


def names(lines: list[str]) -> list[str]:
    return [line.split(":", 1)[0].removeprefix("ingestd.") for line in lines]


@pytest.mark.parametrize("service", ["openai", "llamaparse"])
def test_each_outcome_counts_what_happened(statsd_server: socket.socket, service: str) -> None:
    on_event = attempt_metrics(client(statsd_server), service)
    http_503 = TransientError("503 from the service")
    http_503.http_status = 503

    on_event(AttemptEvent("embed", 1, "retry", http_503, delay=1.0, elapsed=0.2))
    on_event(AttemptEvent("embed", 2, "retry", TransientError("timed out"), elapsed=0.3))
    on_event(AttemptEvent("embed", 2, "rejected", CircuitOpen("breaker open")))
    on_event(AttemptEvent("embed", 2, "rejected", RateLimited("budget spent")))
    on_event(AttemptEvent("embed", 3, "success", elapsed=0.1))

    assert names(sent(statsd_server)) == [
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
