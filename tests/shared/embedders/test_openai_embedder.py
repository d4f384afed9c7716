from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pybase64
import pytest

from ingestd.shared.embedders.openai import OpenAIEmbedder, _decode, _decode_usual
from ingestd.shared.errors import (
    AuthError,
    CircuitOpen,
    ConfigError,
    InvalidInput,
    QuotaExhausted,
    TransientError,
)
from ingestd.shared.resilience import AttemptEvent, Backoff, CircuitBreaker
from ingestd.shared.tokens import count_tokens
from tests.emulators import OpenAIEmulator, OpenAIFault, embedding_for
from tests.emulators.openai_api import DEFAULT_API_KEY

FAST = Backoff(base=0.01, cap=0.05)
TEXTS = ["The cat sat on the mat.", "Ingestion daemons move documents.", "ünïcödé ✓ 日本語"]


def make(api: OpenAIEmulator, **kwargs: Any) -> OpenAIEmbedder:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("timeout", 10.0)
    return OpenAIEmbedder(kwargs.pop("api_key", DEFAULT_API_KEY), base_url=api.base_url, **kwargs)


def run_embed(
    api: OpenAIEmulator, texts: list[str], **kwargs: Any
) -> tuple[np.ndarray, OpenAIEmbedder]:
    correlation_id = kwargs.pop("correlation_id", None)

    async def main() -> tuple[np.ndarray, OpenAIEmbedder]:
        embedder = make(api, **kwargs)
        try:
            return await embedder.embed(texts, correlation_id=correlation_id), embedder
        finally:
            await embedder.aclose()

    return asyncio.run(main())


async def float_mode(api: OpenAIEmulator, texts: list[str], **extra: Any) -> np.ndarray:
    """The same request in JSON-float mode, bypassing our client entirely."""
    body = {"model": "text-embedding-3-small", "input": texts, "encoding_format": "float", **extra}
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api.base_url}/embeddings", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        payload = json.loads(await resp.read())
    rows = sorted(payload["data"], key=lambda item: item["index"])
    return np.asarray([row["embedding"] for row in rows], dtype=np.float32)


def test_base64_vectors_match_the_float_mode(openai_api: OpenAIEmulator) -> None:
    vectors, embedder = run_embed(openai_api, TEXTS, correlation_id="doc-42")
    expected = asyncio.run(float_mode(openai_api, TEXTS))
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, 1536)
    np.testing.assert_array_equal(vectors, expected)
    np.testing.assert_array_equal(vectors[2], embedding_for(TEXTS[2]))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.usage.requests == 1
    assert embedder.usage.texts == 3
    assert embedder.usage.tokens == sum(count_tokens(t) for t in TEXTS)
    first = openai_api.stats.records[0]
    assert first.headers.get("x-correlation-id") == "doc-42"
    assert first.headers.get("x-stainless-retry-count") == "0"


def test_shortened_dimensions(openai_api: OpenAIEmulator) -> None:
    vectors, embedder = run_embed(openai_api, TEXTS, dimensions=256)
    assert embedder.dimensions == 256
    assert vectors.shape == (3, 256)
    expected = asyncio.run(float_mode(openai_api, TEXTS, dimensions=256))
    np.testing.assert_array_equal(vectors, expected)


def test_large_input_lists_are_split_and_order_kept(openai_api: OpenAIEmulator) -> None:
    texts = [f"chunk number {i}" for i in range(7)]
    vectors, embedder = run_embed(openai_api, texts, max_inputs_per_request=3)
    assert openai_api.stats.count(200) == 3
    assert embedder.usage.requests == 3
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(vectors[i], embedding_for(text))


def test_token_cap_splits_requests(openai_api: OpenAIEmulator) -> None:
    texts = ["x" * 400] * 5  # 100 estimated tokens each
    run_embed(openai_api, texts, max_tokens_per_request=250)
    assert [r.n_inputs for r in openai_api.stats.records] == [2, 2, 1]


def test_rate_limit_storm_is_absorbed(openai_api: OpenAIEmulator) -> None:
    openai_api.config.forced_retry_after = 0.05
    openai_api.config.fault_rates = {OpenAIFault.RATE_LIMIT: 0.5}
    openai_api.config.seed = 7
    events: list[AttemptEvent] = []

    async def main() -> tuple[list[np.ndarray], OpenAIEmbedder]:
        embedder = make(openai_api, max_attempts=2, on_event=events.append)
        try:
            results = await asyncio.gather(*(embedder.embed([f"text {i}"]) for i in range(12)))
        finally:
            await embedder.aclose()
        return list(results), embedder

    results, embedder = asyncio.run(main())
    assert len(results) == 12
    stats = openai_api.stats
    assert stats.count(429) >= 3
    assert stats.count(200) == 12
    assert embedder.usage.retries == stats.count(429)
    assert embedder.limiter.stats.rate_limited_pauses == stats.count(429)
    assert sum(e.outcome == "retry" for e in events) == stats.count(429)


def test_retry_after_is_honoured(openai_api: OpenAIEmulator) -> None:
    openai_api.config.forced_retry_after = 0.3
    openai_api.inject(OpenAIFault.RATE_LIMIT, times=2)
    run_embed(openai_api, ["hello"])
    times = [r.time for r in openai_api.stats.records]
    assert [r.status for r in openai_api.stats.records] == [429, 429, 200]
    # A lower bound only: the client may never come back sooner than the server asked.
    assert times[1] - times[0] >= 0.29
    assert times[2] - times[1] >= 0.29


def test_the_account_budget_is_learnt_and_respected(openai_api: OpenAIEmulator) -> None:
    """A run bigger than the per-minute budget: paced from the headers, no 429 at all."""
    openai_api.config.tpm = 120_000  # 2,000 tokens/s
    text = "y" * 8_000  # 2,000 estimated tokens
    n = 62  # the budget is exceeded by ~4,000 tokens: about two seconds of pacing

    async def main() -> OpenAIEmbedder:
        embedder = make(openai_api)
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                await embedder.embed([text + str(i)])

        try:
            await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await embedder.aclose()
        return embedder

    embedder = asyncio.run(main())
    assert openai_api.stats.count(200) == n
    assert openai_api.stats.count(429) == 0
    assert embedder.limiter.tpm == 120_000
    assert embedder.limiter.stats.waited_acquisitions > 0


@pytest.mark.parametrize(
    "faults",
    [
        [OpenAIFault.SERVER_ERROR, OpenAIFault.UNAVAILABLE, OpenAIFault.SERVER_ERROR],
        [OpenAIFault.DROP, OpenAIFault.DROP],
        [
            OpenAIFault.INVALID_JSON,
            OpenAIFault.WRONG_COUNT,
            OpenAIFault.WRONG_DIMENSION,
            OpenAIFault.NAN,
        ],
    ],
    ids=["5xx", "dropped", "malformed"],
)
def test_transient_bursts_recover(openai_api: OpenAIEmulator, faults: list[OpenAIFault]) -> None:
    openai_api.config.faults.extend(faults)
    vectors, embedder = run_embed(openai_api, TEXTS, max_attempts=len(faults) + 1)
    np.testing.assert_array_equal(vectors[0], embedding_for(TEXTS[0]))
    assert embedder.usage.retries == len(faults)
    assert openai_api.stats.requests == len(faults) + 1


@pytest.mark.parametrize(
    "fault",
    [
        OpenAIFault.INVALID_JSON,
        OpenAIFault.WRONG_COUNT,
        OpenAIFault.WRONG_DIMENSION,
        OpenAIFault.NAN,
    ],
)
def test_malformed_response_is_transient_and_never_returned(
    openai_api: OpenAIEmulator, fault: OpenAIFault
) -> None:
    openai_api.inject(fault)
    with pytest.raises(TransientError, match="malformed"):
        run_embed(openai_api, TEXTS, max_attempts=1)


def test_insufficient_quota_fails_at_once(openai_api: OpenAIEmulator) -> None:
    openai_api.inject(OpenAIFault.QUOTA, times=5)
    with pytest.raises(QuotaExhausted):
        run_embed(openai_api, TEXTS)
    assert openai_api.stats.requests == 1


def test_wrong_key_fails_at_once_without_leaking_it(openai_api: OpenAIEmulator) -> None:
    key = "sk-wrong-0123456789abcdefghijklmnop"
    with pytest.raises(AuthError) as info:
        run_embed(openai_api, TEXTS, api_key=key)
    assert openai_api.stats.requests == 1
    assert key not in str(info.value)


def test_breaker_opens_on_a_failing_service(openai_api: OpenAIEmulator) -> None:
    openai_api.inject(OpenAIFault.UNAVAILABLE, times=50)

    async def main() -> None:
        embedder = make(
            openai_api,
            max_attempts=10,
            breaker=CircuitBreaker("openai", failure_threshold=3, reset_timeout=60),
        )
        try:
            with pytest.raises(CircuitOpen):
                await embedder.embed(TEXTS)
            with pytest.raises(CircuitOpen):
                await embedder.embed(TEXTS)
        finally:
            await embedder.aclose()

    asyncio.run(main())
    assert openai_api.stats.requests == 3


def test_timeout_is_retried(openai_api: OpenAIEmulator) -> None:
    openai_api.config.slow_seconds = 30.0
    openai_api.inject(OpenAIFault.SLOW)
    vectors, embedder = run_embed(openai_api, TEXTS, timeout=3.0)
    assert vectors.shape == (3, 1536)
    assert embedder.usage.retries == 1


def test_invalid_inputs_are_rejected_before_any_request(openai_api: OpenAIEmulator) -> None:
    with pytest.raises(InvalidInput, match="#1 is empty"):
        run_embed(openai_api, ["fine", ""])
    with pytest.raises(InvalidInput, match="8191"):
        run_embed(openai_api, ["fine", "word " * 9000])
    with pytest.raises(InvalidInput, match="Unicode"):
        run_embed(openai_api, ["bad \ud800 surrogate"])
    assert openai_api.stats.requests == 0


def test_empty_batch_costs_nothing(openai_api: OpenAIEmulator) -> None:
    vectors, _ = run_embed(openai_api, [])
    assert vectors.shape == (0, 1536)
    assert openai_api.stats.requests == 0


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        OpenAIEmbedder("")
    with pytest.raises(ConfigError):
        OpenAIEmbedder("sk-x", model="text-embedding-ada-002", dimensions=256)
    with pytest.raises(ConfigError):
        OpenAIEmbedder("sk-x", dimensions=5000)
    with pytest.raises(ConfigError):
        OpenAIEmbedder("sk-x", model="some-future-model")
    assert OpenAIEmbedder("sk-x", model="text-embedding-3-large").dimensions == 3072


def _response(vectors: np.ndarray, order: list[int]) -> bytes:
    data = [
        {"object": "embedding", "index": i, "embedding": pybase64.b64encode(vectors[i]).decode()}
        for i in order
    ]
    return json.dumps({"data": data, "usage": {"prompt_tokens": 7}}).encode()


def test_responses_in_any_order_decode_to_the_same_matrix() -> None:
    vectors = np.random.default_rng(3).standard_normal((5, 1536)).astype("<f4")
    in_order, tokens = _decode(_response(vectors, [0, 1, 2, 3, 4]), 5, 1536)
    shuffled, _ = _decode(_response(vectors, [3, 0, 4, 1, 2]), 5, 1536)
    np.testing.assert_array_equal(in_order, vectors)
    np.testing.assert_array_equal(shuffled, vectors)
    assert tokens == 7


def test_a_bad_vector_in_an_ordered_response_is_named() -> None:
    vectors = np.random.default_rng(4).standard_normal((3, 1536)).astype("<f4")
    payload = json.loads(_response(vectors, [0, 1, 2]))
    payload["data"][1]["embedding"] = "!" + payload["data"][1]["embedding"][1:]
    with pytest.raises(TransientError, match="vector #1 is not valid base64"):
        _decode(json.dumps(payload).encode(), 3, 1536)
    payload = json.loads(_response(vectors, [0, 1, 2]))
    payload["data"][1]["embedding"] = payload["data"][1]["embedding"][:-4]
    with pytest.raises(TransientError, match="vector #1 has 1535 dimensions"):
        _decode(json.dumps(payload).encode(), 3, 1536)


def test_only_the_usual_response_takes_the_direct_path() -> None:
    vectors = np.random.default_rng(5).standard_normal((4, 1536)).astype("<f4")
    fast = _decode_usual(_response(vectors, [0, 1, 2, 3]), 4, 1536)
    assert fast is not None
    np.testing.assert_array_equal(fast[0], vectors)
    assert fast[1] == 7
    # Out of order, a vector short, a count off, or floats: the general path decides.
    assert _decode_usual(_response(vectors, [1, 0, 2, 3]), 4, 1536) is None
    assert _decode_usual(_response(vectors, [0, 1, 2]), 4, 1536) is None
    short = json.loads(_response(vectors, [0, 1, 2, 3]))
    short["data"][2]["embedding"] = short["data"][2]["embedding"][:-8]
    assert _decode_usual(json.dumps(short).encode(), 4, 1536) is None
    escaped = _response(vectors, [0, 1, 2, 3]).replace(b"/", b"\\/")  # legal JSON
    assert b"\\/" in escaped
    assert _decode_usual(escaped, 4, 1536) is None
    np.testing.assert_array_equal(_decode(escaped, 4, 1536)[0], vectors)
    floats = json.loads(_response(vectors, [0, 1, 2, 3]))
    floats["data"][0]["embedding"] = vectors[0].tolist()
    assert _decode_usual(json.dumps(floats).encode(), 4, 1536) is None
    matrix, _ = _decode(json.dumps(floats).encode(), 4, 1536)
    np.testing.assert_array_equal(matrix, vectors)
