from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ingestd.shared.embedders import (
    Embedder,
    available_embedders,
    cost_usd,
    make_embedder,
    validate_embeddings,
)
from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.shared.errors import ConfigError, InvalidInput, TransientError


def test_registry() -> None:
    assert available_embedders() == ["hash", "local", "openai"]
    embedder = make_embedder("hash", dimensions=32)
    assert isinstance(embedder, HashEmbedder)
    assert isinstance(embedder, Embedder)
    with pytest.raises(ConfigError, match="unknown embedder 'nope'"):
        make_embedder("nope")


def test_openai_embedder_satisfies_the_protocol() -> None:
    embedder = make_embedder("openai", api_key="sk-test")
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.model, embedder.dimensions) == (
        "openai",
        "text-embedding-3-small",
        1536,
    )
    asyncio.run(embedder.aclose())


def test_prices() -> None:
    assert cost_usd("text-embedding-3-small", 1_000_000) == pytest.approx(0.02)
    assert cost_usd("text-embedding-3-large", 500_000) == pytest.approx(0.065)
    assert cost_usd("text-embedding-ada-002", 2_000_000) == pytest.approx(0.20)
    assert cost_usd("all-MiniLM-L6-v2", 10**9) == 0.0
    with pytest.raises(KeyError):
        cost_usd("gpt-unknown", 1)


def test_validation_accepts_good_vectors() -> None:
    good = np.eye(3, 4, dtype=np.float64)
    out = validate_embeddings(good, 3, 4)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous


@pytest.mark.parametrize(
    ("matrix", "count", "dims", "message"),
    [
        (np.ones((2, 4)), 3, 4, "expected 3 vectors, got 2"),
        (np.ones((3, 5)), 3, 4, "expected 4 dimensions, got 5"),
        (np.ones(4), 1, 4, "2-d"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), 2, 2, "non-finite value in vector #0"),
        (np.array([[1.0, 1.0], [np.inf, 1.0]]), 2, 2, "non-finite value in vector #1"),
        (np.array([[1.0, 1.0], [0.0, 0.0]]), 2, 2, "zero-norm vector #1"),
    ],
)
def test_validation_rejects_garbage(
    matrix: np.ndarray, count: int, dims: int, message: str
) -> None:
    with pytest.raises(TransientError, match=message) as info:
        validate_embeddings(matrix, count, dims)
    assert "malformed embedding response" in info.value.message


def test_hash_embedder_is_deterministic_unit_and_word_sensitive() -> None:
    embedder = HashEmbedder(dimensions=256)
    texts = [
        "postgres vector search with pgvector",
        "vector search in postgres using pgvector",
        "a recipe for apple pie",
        "!!!",
    ]
    first = asyncio.run(embedder.embed(texts))
    again = asyncio.run(HashEmbedder(dimensions=256).embed(texts))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (4, 256)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert first[0] @ first[1] > first[0] @ first[2] + 0.3
    assert embedder.usage.texts == 4
    with pytest.raises(InvalidInput):
        asyncio.run(embedder.embed(["ok", ""]))
