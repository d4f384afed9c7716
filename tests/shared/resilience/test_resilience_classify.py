from __future__ import annotations

import json

import aiohttp
import pytest

from ingestd.shared.errors import (
    AuthError,
    ErrorClass,
    IngestError,
    InvalidInput,
    QuotaExhausted,
    RateLimited,
    TransientError,
)
from ingestd.shared.resilience import (
    classify_exception,
    classify_http,
    parse_go_duration,
    parse_retry_after,
    parse_try_again_in,
)


def openai_error(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


RATE_LIMIT_BODY = openai_error(
    "Rate limit reached for text-embedding-3-small on tokens per min (TPM): Limit 1000000, "
    "Used 999000, Requested 4000. Please try again in 2.812s.",
    "tokens",
    "rate_limit_exceeded",
)
QUOTA_BODY = openai_error(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    "insufficient_quota",
)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, RATE_LIMIT_BODY, RateLimited),
        (429, QUOTA_BODY, QuotaExhausted),
        (429, None, RateLimited),
        (402, b'{"detail": "Out of credits"}', QuotaExhausted),
        (
            401,
            openai_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            AuthError,
        ),
        (403, b"", AuthError),
        (
            400,
            openai_error("too many tokens", "invalid_request_error", "max_tokens_per_request"),
            InvalidInput,
        ),
        (413, b"<html>too big</html>", InvalidInput),
        (422, b'{"detail": [{"msg": "field required"}]}', InvalidInput),
        (408, None, TransientError),
        (409, None, TransientError),
        (500, openai_error("The server had an error", "server_error", None), TransientError),
        (502, b"<html>bad gateway</html>", TransientError),
        (503, b"", TransientError),
        (200, b"{not json", TransientError),
    ],
)
def test_classification_table(status: int, body: bytes | None, expected: type[IngestError]) -> None:
    error = classify_http(status, body, {})
    assert type(error) is expected
    assert error.error_class is expected.error_class


def test_classes_have_the_documented_retryability() -> None:
    assert classify_http(429, RATE_LIMIT_BODY, {}).error_class.retryable
    assert classify_http(503, None, {}).error_class.retryable
    for status, body in [(429, QUOTA_BODY), (402, None), (401, None), (400, None)]:
        assert not classify_http(status, body, {}).error_class.retryable


def test_malformed_success_body_says_so() -> None:
    error = classify_http(200, b"\x00\xffgarbage", {})
    assert isinstance(error, TransientError)
    assert "malformed response" in error.message


def test_malformed_5xx_body_is_transient_and_says_so() -> None:
    error = classify_http(500, b"{truncated", {})
    assert isinstance(error, TransientError)
    assert "malformed" in error.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": "7"}, 7.0),
        (
            {
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "120ms",
            },
            360.0,
        ),
        ({"x-ratelimit-reset-tokens": "3s", "x-ratelimit-reset-requests": "120ms"}, 0.12),
    ],
)
def test_rate_limit_retry_after_sources(headers: dict[str, str], expected: float) -> None:
    error = classify_http(429, None, headers)
    assert isinstance(error, RateLimited)
    assert error.retry_after == pytest.approx(expected)


def test_rate_limit_retry_after_from_message_when_no_header() -> None:
    error = classify_http(429, RATE_LIMIT_BODY, {"x-request-id": "req_abc"})
    assert error.retry_after == pytest.approx(2.812)
    assert "req_abc" in error.message


def test_retry_after_header_beats_message() -> None:
    error = classify_http(429, RATE_LIMIT_BODY, {"retry-after": "4"})
    assert error.retry_after == 4.0


def test_5xx_retry_after_is_kept_but_reset_headers_are_not_used() -> None:
    assert classify_http(503, None, {"Retry-After": "2"}).retry_after == 2.0
    assert classify_http(503, None, {"x-ratelimit-reset-tokens": "6m0s"}).retry_after is None


def test_messages_never_carry_keys_or_whole_payloads() -> None:
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    body = openai_error(
        f"Incorrect API key provided: {key}. " + "x" * 5000,
        "invalid_request_error",
        "invalid_api_key",
    )
    error = classify_http(401, body, {"authorization": f"Bearer {key}"})
    assert key not in error.message
    assert "sk-proj" not in error.message
    assert len(error.message) < 400
    masked = classify_http(
        401, openai_error("Incorrect API key provided: sk-ab***yz.", "x", None), {}
    )
    assert "sk-ab" not in masked.message


def test_unparseable_html_error_body_is_not_echoed() -> None:
    error = classify_http(502, b"<html><body>secret document text</body></html>", {})
    assert "secret document text" not in error.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("2.812s", 2.812),
        ("0s", 0.0),
        ("500us", 0.0005),
        ("17", 17.0),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s junk", None),
        (None, None),
    ],
)
def test_go_durations(text: str | None, seconds: float | None) -> None:
    result = parse_go_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == pytest.approx(
        10.0
    )
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412500.0) == 0.0
    assert parse_retry_after("-3") is None
    assert parse_try_again_in("Please try again in 20ms.") == pytest.approx(0.02)
    assert parse_try_again_in("Please try again in 1m30s.") == pytest.approx(90.0)
    assert parse_try_again_in("no hint here") is None


def test_exceptions_are_classified() -> None:
    assert isinstance(classify_exception(TimeoutError()), TransientError)
    assert isinstance(classify_exception(ConnectionResetError()), TransientError)
    assert isinstance(classify_exception(aiohttp.ServerDisconnectedError()), TransientError)
    assert isinstance(classify_exception(aiohttp.ClientConnectionError()), TransientError)
    assert isinstance(classify_exception(aiohttp.ClientPayloadError()), TransientError)
    assert isinstance(classify_exception(json.JSONDecodeError("x", "doc", 0)), TransientError)
    bug = classify_exception(KeyError("chunk text that must not leak"))
    assert bug.error_class is ErrorClass.INTERNAL
    assert "must not leak" not in bug.message
    already = RateLimited("slow down", retry_after=1.0)
    assert classify_exception(already) is already


def test_aiohttp_response_error_uses_status() -> None:
    exc = aiohttp.ClientResponseError(None, (), status=429, headers={"Retry-After": "3"})  # type: ignore[arg-type]
    error = classify_exception(exc)
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3.0


def test_openai_exceptions_are_classified() -> None:
    import httpx2
    import openai

    request = httpx2.Request("POST", "http://127.0.0.1/v1/embeddings")
    response = httpx2.Response(
        429, request=request, content=QUOTA_BODY, headers={"x-request-id": "req_1"}
    )
    exc = openai.RateLimitError("quota", response=response, body=json.loads(QUOTA_BODY)["error"])
    assert isinstance(classify_exception(exc), QuotaExhausted)
    limited = openai.RateLimitError(
        "rl", response=httpx2.Response(429, request=request, content=RATE_LIMIT_BODY), body=None
    )
    error = classify_exception(limited)
    assert isinstance(error, RateLimited)
    assert error.retry_after == pytest.approx(2.812)
    assert isinstance(classify_exception(openai.APITimeoutError(request)), TransientError)
    assert isinstance(
        classify_exception(openai.APIConnectionError(request=request)), TransientError
    )
