"""A statsd server for the metrics tests: a UDP socket on loopback, and how to read it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ingestd.shared.telemetry.metrics import Metrics

TIMEOUT = 5.0  # safety net only: datagrams to loopback arrive at once


@pytest.fixture
def statsd_server() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    yield sock
    sock.close()


def recv(sock: socket.socket) -> str:
    data, _ = sock.recvfrom(65535)
    return data.decode("ascii")


def client(sock: socket.socket, *, strict: bool = True) -> Metrics:
    port = sock.getsockname()[1]
    return Metrics.from_settings("127.0.0.1", port, "ingestd", "worker", 1, strict=strict)
