"""The OpenAI embeddings emulator over real sockets: the official client, limits, errors,
rate-limit headers and budgets, faults, determinism."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable

import numpy as np
import openai
import pytest

from ingestd.shared.tokens import count_tokens, estimate_api_tokens, get_encoding
from tests.emulators import OpenAIEmulator, OpenAIEmulatorConfig, OpenAIFault, embedding_for
from tests.emulators._base import go_duration

from .conftest import FakeClock, http

KEY = "sk-emulator-key"
SMALL = "text-embedding-3-small"
Start = Callable[..., OpenAIEmulator]


def client(em: OpenAIEmulator, **kwargs: object) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    return openai.OpenAI(api_key=KEY, base_url=em.base_url, **kwargs)  # type: ignore[arg-type]


def embed_raw(em: OpenAIEmulator, payload: dict[str, object], key: str | None = KEY):
    payload = {"encoding_format": "base64", **payload}
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return http("POST", em.url + "/v1/embeddings", payload, headers)


def test_official_client_base64_and_float_agree_and_match_embedding_for(start_openai: Start):
    em = start_openai()
    texts = ["hello world", "The quick brown fox", "ünïcödé ✓"]
    c = client(em)
    by_default = c.embeddings.create(model=SMALL, input=texts)  # the client asks for base64
    as_float = c.embeddings.create(model=SMALL, input=texts, encoding_format="float")
    as_b64 = c.embeddings.create(model=SMALL, input=texts, encoding_format="base64")

    assert [d.index for d in by_default.data] == [0, 1, 2]
    for i, text in enumerate(texts):
        expected = embedding_for(text, SMALL)
        assert expected.shape == (1536,)
        assert math.isclose(float(np.linalg.norm(expected)), 1.0, rel_tol=1e-5)
        decoded = np.frombuffer(base64.b64decode(as_b64.data[i].embedding), dtype="<f4")
        np.testing.assert_array_equal(decoded, expected)
        np.testing.assert_array_equal(np.array(as_float.data[i].embedding, np.float32), expected)
        np.testing.assert_array_equal(np.array(by_default.data[i].embedding, np.float32), expected)
    total = sum(count_tokens(t) for t in texts)
    assert as_float.usage.prompt_tokens == total
    assert as_float.usage.total_tokens == total
    assert as_float.model == SMALL
    assert em.stats.tokens_served == 3 * total
    assert em.stats.inputs_served == 9


def test_official_client_works_with_the_bare_url_too(start_openai: Start):
    em = start_openai()
    c = openai.OpenAI(api_key=KEY, base_url=em.url, max_retries=0)
    result = c.embeddings.create(model=SMALL, input="bare", dimensions=64)
    np.testing.assert_allclose(
        np.array(result.data[0].embedding, np.float32),
        embedding_for("bare", SMALL, dimensions=64),
        rtol=1e-6,
    )
    assert [r.path for r in em.stats.records] == ["/embeddings"]


def test_dimensions_shorten_then_renormalise(start_openai: Start):
    em = start_openai()
    c = client(em)
    for model, full in (("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072)):
        short = c.embeddings.create(model=model, input="shorten me", dimensions=256)
        vec = np.array(short.data[0].embedding, np.float32)
        assert vec.shape == (256,)
        prefix = embedding_for("shorten me", model)[:256]
        np.testing.assert_allclose(vec, prefix / np.linalg.norm(prefix), rtol=1e-5, atol=1e-7)
        assert len(c.embeddings.create(model=model, input="x").data[0].embedding) == full

    with pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=256)
    assert err.value.status_code == 400
    assert err.value.body["message"] == "This model does not support specifying dimensions."
    assert err.value.body["type"] == "invalid_request_error"

    bad = embed_raw(em, {"model": SMALL, "input": "x", "dimensions": 1537})
    assert bad.status == 400 and bad.json()["error"]["param"] == "dimensions"


def test_same_text_same_vector_whatever_the_input_form(start_openai: Start):
    em, other = start_openai(), start_openai()
    text = "Determinism is a feature."
    tokens = get_encoding().encode_ordinary(text)
    c = client(em)
    as_text = c.embeddings.create(model=SMALL, input=text).data[0].embedding
    as_tokens = c.embeddings.create(model=SMALL, input=tokens).data[0].embedding
    as_token_lists = c.embeddings.create(model=SMALL, input=[tokens, tokens]).data
    again = client(other).embeddings.create(model=SMALL, input=[text]).data[0].embedding
    assert as_text == as_tokens == as_token_lists[0].embedding == as_token_lists[1].embedding
    assert as_text == again
    different = c.embeddings.create(model=SMALL, input=text + " ").data[0].embedding
    assert different != as_text
    ada = c.embeddings.create(model="text-embedding-ada-002", input=text).data[0].embedding
    assert ada != as_text
    usage = c.embeddings.create(model=SMALL, input=[tokens, tokens]).usage
    assert usage.prompt_tokens == 2 * len(tokens)


def test_auth_errors_have_the_real_body_shape(start_openai: Start):
    em = start_openai()
    for key in (None, "sk-wrong"):
        reply = embed_raw(em, {"model": SMALL, "input": "x"}, key=key)
        assert reply.status == 401
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert "sk-wrong" not in error["message"]
        assert reply.headers["x-request-id"].startswith("req_")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sk-wrong", base_url=em.base_url, max_retries=0).embeddings.create(
            model=SMALL, input="x"
        )
    assert em.stats.count(401) == 3
    # a key of None accepts any bearer token, but still requires one
    em.config.api_key = None
    assert embed_raw(em, {"model": SMALL, "input": "x"}, key="anything").status == 200
    assert embed_raw(em, {"model": SMALL, "input": "x"}, key=None).status == 401


def test_request_limits_and_their_error_bodies(start_openai: Start):
    em = start_openai(OpenAIEmulatorConfig(exact_usage=False))
    invalid_input = "'$.input' is invalid. Please check the API reference: "

    assert embed_raw(em, {"model": SMALL, "input": ["a"] * 2048}).status == 200
    too_many = embed_raw(em, {"model": SMALL, "input": ["a"] * 2049})
    assert too_many.status == 400
    assert too_many.json()["error"]["message"].startswith(invalid_input)
    for empty in ("", [""], ["ok", ""], [], [[]]):
        reply = embed_raw(em, {"model": SMALL, "input": empty})
        assert reply.status == 400, empty
        assert reply.json()["error"]["type"] == "invalid_request_error"

    # 300,000 tokens per request, judged by the byte estimate (0.25 token per byte)
    chunk = "ab " * 2666 + "ab"  # 8000 bytes -> 2000 estimated tokens
    assert estimate_api_tokens(chunk) == 2000
    assert embed_raw(em, {"model": SMALL, "input": [chunk] * 150}).status == 200
    over = embed_raw(em, {"model": SMALL, "input": [chunk] * 151})
    assert over.status == 400
    assert over.json() == {
        "error": {
            "message": "Requested 302000 tokens, max 300000 tokens per request",
            "type": "max_tokens_per_request",
            "param": None,
            "code": "max_tokens_per_request",
        }
    }

    # 8192 tokens per input, counted with cl100k_base
    token = get_encoding().encode_ordinary(" hello")[0]
    assert embed_raw(em, {"model": SMALL, "input": [[token] * 8192]}).status == 200
    long_tokens = embed_raw(em, {"model": SMALL, "input": [[token] * 8193]})
    assert long_tokens.status == 400
    assert "maximum context length is 8192 tokens" in long_tokens.json()["error"]["message"]
    long_text = "word " * 9000
    n = count_tokens(long_text)
    assert n > 8192
    reply = embed_raw(em, {"model": SMALL, "input": long_text})
    assert reply.status == 400
    assert f"however you requested {n} tokens" in reply.json()["error"]["message"]

    unknown = embed_raw(em, {"model": "text-embedding-9", "input": "x"})
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "model_not_found"
    fmt = embed_raw(em, {"model": SMALL, "input": "x", "encoding_format": "hex"})
    assert fmt.status == 400 and fmt.json()["error"]["param"] == "encoding_format"
    bad_token = embed_raw(em, {"model": SMALL, "input": [[10**9]]})
    assert bad_token.status == 400


def test_rate_limit_headers_are_present_and_consistent(start_openai: Start, clock: FakeClock):
    em = start_openai(OpenAIEmulatorConfig(rpm=100, tpm=10_000), clock=clock)
    text = "x" * 400  # 100 estimated tokens
    first = embed_raw(em, {"model": SMALL, "input": text})
    second = embed_raw(em, {"model": SMALL, "input": text})
    assert first.status == second.status == 200
    h = second.headers
    assert h["x-ratelimit-limit-requests"] == "100"
    assert h["x-ratelimit-limit-tokens"] == "10000"
    assert h["x-ratelimit-remaining-requests"] == "98"
    assert h["x-ratelimit-remaining-tokens"] == "9800"
    assert h["x-ratelimit-reset-requests"] == "1.2s"  # 2 requests at 100/min
    assert h["x-ratelimit-reset-tokens"] == "1.2s"  # 200 tokens at 10,000/min
    assert first.headers["x-request-id"] != second.headers["x-request-id"]

    clock.advance(0.6)  # one request and 100 tokens flow back
    h = embed_raw(em, {"model": SMALL, "input": "y"}).headers
    assert h["x-ratelimit-remaining-requests"] == "98"
    assert h["x-ratelimit-remaining-tokens"] == "9899"

    unlimited = start_openai()
    h = embed_raw(unlimited, {"model": SMALL, "input": "x"}).headers
    for name in ("requests", "tokens"):
        assert int(h[f"x-ratelimit-limit-{name}"]) == int(h[f"x-ratelimit-remaining-{name}"])
        assert h[f"x-ratelimit-reset-{name}"] == "0s"


def test_request_budget_429_then_recovery(start_openai: Start, clock: FakeClock):
    em = start_openai(OpenAIEmulatorConfig(rpm=2), clock=clock)
    ok = [embed_raw(em, {"model": SMALL, "input": "x"}) for _ in range(2)]
    assert [r.status for r in ok] == [200, 200]
    limited = embed_raw(em, {"model": SMALL, "input": "x"})
    assert limited.status == 429
    error = limited.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert error["message"].startswith(
        f"Rate limit reached for {SMALL} in organization org-emulator on requests per min (RPM):"
        " Limit 2, Used 2, Requested 1. Please try again in 30s."
    )
    assert limited.headers["retry-after"] == "30"
    assert limited.headers["retry-after-ms"] == "30000"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert em.stats.rate_limited == 1

    clock.advance(29.9)
    assert embed_raw(em, {"model": SMALL, "input": "x"}).status == 429
    clock.advance(0.1)
    assert embed_raw(em, {"model": SMALL, "input": "x"}).status == 200


def test_token_budget_429_says_when_to_retry(start_openai: Start, clock: FakeClock):
    em = start_openai(OpenAIEmulatorConfig(tpm=1000), clock=clock)
    text = "z" * 2400  # 600 estimated tokens
    assert embed_raw(em, {"model": SMALL, "input": text}).status == 200
    limited = embed_raw(em, {"model": SMALL, "input": text})
    assert limited.status == 429
    message = limited.json()["error"]["message"]
    assert "on tokens per min (TPM): Limit 1000, Used 600, Requested 600." in message
    # 200 tokens short at 1000/60 per second = 12 s
    assert "Please try again in 12s." in message
    assert limited.headers["retry-after-ms"] == "12000"
    clock.advance(12)
    assert embed_raw(em, {"model": SMALL, "input": text}).status == 200

    too_large = embed_raw(em, {"model": SMALL, "input": "z" * 4004})  # 1001 > whole budget
    assert too_large.status == 429
    assert too_large.json()["error"]["message"].startswith("Request too large for")
    assert "retry-after" not in too_large.headers


def test_official_client_waits_out_a_real_429_and_succeeds(start_openai: Start):
    # 6000 tokens/min refill at 100/s: the second request must wait ~0.1 s, as the
    # retry-after-ms header tells the client.
    em = start_openai(OpenAIEmulatorConfig(tpm=6000))
    c = client(em, max_retries=3)
    c.embeddings.create(model=SMALL, input="hello " * 4000)  # 6000 estimated: drains it
    result = c.embeddings.create(model=SMALL, input="q" * 40)
    assert len(result.data) == 1
    statuses = [r.status for r in em.stats.records]
    assert statuses[0] == 200 and statuses[-1] == 200
    assert 429 in statuses[1:-1]


def test_injected_rate_limit_is_retried_by_the_client(start_openai: Start):
    em = start_openai(OpenAIEmulatorConfig(forced_retry_after=0.05))
    em.inject(OpenAIFault.RATE_LIMIT, times=2)
    result = client(em, max_retries=2).embeddings.create(model=SMALL, input="retry me")
    assert len(result.data) == 1
    assert [r.status for r in em.stats.records] == [429, 429, 200]
    assert [r.fault for r in em.stats.records] == ["rate_limit", "rate_limit", None]


@pytest.mark.parametrize(
    ("fault", "exc", "status", "type_", "code"),
    [
        (OpenAIFault.QUOTA, openai.RateLimitError, 429, "insufficient_quota", "insufficient_quota"),
        (OpenAIFault.SERVER_ERROR, openai.InternalServerError, 500, "server_error", None),
        (OpenAIFault.UNAVAILABLE, openai.InternalServerError, 503, "server_error", None),
    ],
)
def test_error_faults(
    start_openai: Start,
    fault: OpenAIFault,
    exc: type[openai.APIStatusError],
    status: int,
    type_: str,
    code: str | None,
):
    em = start_openai()
    em.inject(fault)
    with pytest.raises(exc) as err:
        client(em).embeddings.create(model=SMALL, input="x")
    assert err.value.status_code == status
    assert err.value.body["type"] == type_
    assert err.value.body["code"] == code
    if fault is OpenAIFault.QUOTA:
        assert err.value.body["message"].startswith("You exceeded your current quota")
    assert client(em).embeddings.create(model=SMALL, input="x").data  # the next one is fine
    assert em.stats.count(status) == 1 and em.stats.count(200) == 1


def test_dropped_connection_and_slow_reply(start_openai: Start):
    em = start_openai(OpenAIEmulatorConfig(slow_seconds=30))
    em.inject(OpenAIFault.DROP)
    with pytest.raises(openai.APIConnectionError):
        client(em).embeddings.create(model=SMALL, input="x")
    assert em.stats.dropped == 1
    assert em.stats.records[-1].status is None

    em.inject(OpenAIFault.SLOW)
    with pytest.raises(openai.APITimeoutError):
        client(em, timeout=0.2).embeddings.create(model=SMALL, input="x")
    assert client(em).embeddings.create(model=SMALL, input="x").data


def test_malformed_body_faults(start_openai: Start):
    em = start_openai()
    payload = {"model": SMALL, "input": ["a", "b", "c"], "encoding_format": "float"}

    em.inject(OpenAIFault.INVALID_JSON)
    reply = embed_raw(em, payload)
    assert reply.status == 200
    with pytest.raises(ValueError):
        reply.json()

    em.inject(OpenAIFault.WRONG_COUNT)
    assert len(embed_raw(em, payload).json()["data"]) == 2

    em.inject(OpenAIFault.WRONG_DIMENSION)
    data = embed_raw(em, payload).json()["data"]
    assert {len(d["embedding"]) for d in data} == {1535}

    em.inject(OpenAIFault.NAN)
    data = embed_raw(em, payload).json()["data"]  # Python's json reads the NaN literal
    assert math.isnan(data[0]["embedding"][0])
    em.inject(OpenAIFault.NAN)
    data = embed_raw(em, {**payload, "encoding_format": "base64"}).json()["data"]
    assert np.isnan(np.frombuffer(base64.b64decode(data[0]["embedding"]), "<f4")[0])

    assert [r.fault for r in em.stats.records] == [
        "invalid_json",
        "wrong_count",
        "wrong_dimension",
        "nan",
        "nan",
    ]


def test_fault_rates_are_seeded_and_can_be_switched_off(start_openai: Start):
    def statuses(em: OpenAIEmulator) -> list[int]:
        return [embed_raw(em, {"model": SMALL, "input": "x"}).status for _ in range(24)]

    config = {"fault_rates": {OpenAIFault.UNAVAILABLE: 0.5}, "seed": 7}
    first = statuses(start_openai(OpenAIEmulatorConfig(**config)))  # type: ignore[arg-type]
    em = start_openai(OpenAIEmulatorConfig(**config))  # type: ignore[arg-type]
    second = statuses(em)
    assert first == second
    assert set(first) == {200, 503}
    em.config.fault_rates = {}
    assert set(statuses(em)) == {200}


def test_records_carry_correlation_ids_and_counts(start_openai: Start):
    em = start_openai()
    c = client(em)
    c.embeddings.create(
        model=SMALL, input=["one", "two"], extra_headers={"x-correlation-id": "doc-42"}
    )
    rec = em.stats.records[-1]
    assert rec.headers["x-correlation-id"] == "doc-42"
    assert rec.n_inputs == 2
    assert rec.tokens == count_tokens("one") + count_tokens("two")
    assert rec.status == 200 and rec.path == "/v1/embeddings"
    assert em.stats.requests == 1
    models = [m.id for m in c.models.list().data]
    assert set(models) == {SMALL, "text-embedding-3-large", "text-embedding-ada-002"}


def test_estimate_usage_mode_reports_the_byte_estimate(start_openai: Start):
    em = start_openai(OpenAIEmulatorConfig(exact_usage=False))
    texts = ["hello there", "ünïcödé"]
    usage = client(em).embeddings.create(model=SMALL, input=texts).usage
    assert usage.prompt_tokens == sum(estimate_api_tokens(t) for t in texts)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.12, "120ms"), (1, "1s"), (2.812, "2.812s"), (360, "6m0s"), (3725.5, "1h2m5.5s")],
)
def test_go_durations(seconds: float, text: str):
    assert go_duration(seconds) == text
    assert re.fullmatch(r"(\d+h)?(\d+m)?[\d.]+m?s", text)
