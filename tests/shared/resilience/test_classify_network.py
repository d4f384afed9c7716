"""A failed connection is named by its root cause (refused, DNS, TLS, reset), wherever
the HTTP client buried it, and with where the service was looked for: never a key, a
path or a payload."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestd.shared.embedders.openai import OpenAIEmbedder
from ingestd.shared.errors import CircuitOpen, ErrorClass, TransientError
from ingestd.shared.resilience import CircuitBreaker, classify_exception
from ingestd.shared.resilience.classify import Endpoint, network_cause
from tests.emulators import OpenAIEmulator, running

KEY = "sk-test-secret-key-0123456789"
API = Endpoint("embedding API", "http://127.0.0.1:9")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOTS: dict[str, BaseException] = {
    "connection refused": ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
    "DNS lookup failed": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    "TLS handshake failed (WRONG_VERSION_NUMBER)": ssl.SSLError(1, "[SSL] wrong version"),
    "connection reset by peer": ConnectionResetError(errno.ECONNRESET, "reset"),
    "host unreachable": OSError(errno.EHOSTUNREACH, "No route to host"),
}
ROOTS["TLS handshake failed (WRONG_VERSION_NUMBER)"].reason = "WRONG_VERSION_NUMBER"  # type: ignore[attr-defined]

# What clients wrap a root in: one of them calls a refused connect a *timeout*.
WRAPPERS = (TimeoutError, RuntimeError, ConnectionError, OSError)


def wrapped(root: BaseException, wrappers: list[type[BaseException]], cause: bool) -> BaseException:
    inner = root
    for kind in wrappers:
        outer = kind("Request timed out.")
        if cause:
            outer.__cause__ = inner
        else:
            outer.__context__ = inner
        inner = outer
    return inner


@given(
    reason=st.sampled_from(sorted(ROOTS)),
    wrappers=st.lists(st.sampled_from(WRAPPERS), max_size=4),
    cause=st.booleans(),
)
def test_the_root_cause_is_found_however_deep_it_is_wrapped(
    reason: str, wrappers: list[type[BaseException]], cause: bool
) -> None:
    error = classify_exception(
        wrapped(ROOTS[reason], wrappers, cause), service="openai", endpoint=API
    )
    assert error.error_class is ErrorClass.TRANSIENT
    assert error.service == "openai"
    assert reason in error.message
    assert "timed out" not in error.message
    if reason == "connection reset by peer":
        assert error.message == f"openai: embedding API at {API.origin}: {reason}"
    else:
        assert error.message == f"openai: embedding API unreachable at {API.origin}: {reason}"


def test_a_real_timeout_is_still_a_timeout() -> None:
    assert network_cause(TimeoutError()) is None
    assert classify_exception(TimeoutError(), service="x").message == "x: request timed out"


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://user:secret@api.example.com:8443/v1?key=sk-1", "https://api.example.com:8443"),
        ("http://127.0.0.1:1234/v1", "http://127.0.0.1:1234"),
        ("https://[::1]/v1", "https://[::1]"),
    ],
)
def test_an_endpoint_names_the_origin_only(url: str, origin: str) -> None:
    endpoint = Endpoint.of("embedding API", url)
    assert endpoint is not None and endpoint.origin == origin


def test_a_breaker_that_opens_reports_the_failure_that_opened_it() -> None:
    breaker = CircuitBreaker("openai", failure_threshold=1, reset_timeout=30.0)
    refused = classify_exception(ROOTS["connection refused"], service="openai", endpoint=API)
    breaker.record_failure(refused)
    with pytest.raises(CircuitOpen) as raised:
        breaker.before_call()
    assert raised.value.service == "openai"
    assert raised.value.message.startswith(refused.message)
    assert raised.value.retry_after is not None and raised.value.retry_after > 0


@pytest.fixture
def emulator() -> Iterator[OpenAIEmulator]:
    with running(OpenAIEmulator()) as api:
        yield api


def _embed(base_url: str) -> TransientError:
    embedder = OpenAIEmbedder(KEY, base_url, dimensions=None, max_attempts=1, timeout=10.0)

    async def go() -> None:
        try:
            await embedder.embed(["hello"])
        finally:
            await embedder.aclose()

    with pytest.raises(TransientError) as raised:
        asyncio.run(go())
    return raised.value


def test_a_closed_port_is_a_refused_connection_not_a_timeout() -> None:
    port = closed_port()
    error = _embed(f"http://127.0.0.1:{port}/v1")
    assert error.message == (
        f"openai: embedding API unreachable at http://127.0.0.1:{port}: connection refused"
    )
    assert KEY not in error.message


def test_tls_spoken_to_a_plain_http_server_is_a_tls_failure(emulator: OpenAIEmulator) -> None:
    url = emulator.base_url.replace("http://", "https://")
    error = _embed(url)
    assert "embedding API unreachable at https://127.0.0.1:" in error.message
    assert "TLS handshake failed" in error.message
