"""What every embedder promises, and the checks that hold it to that promise.

A vector that is the wrong size, non-finite or all zeros would be written to
pgvector and silently poison every search that touches it, so every batch is
validated before it is returned; a bad one raises ``TransientError`` (a retry
usually gets a good answer) and is never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from ingestd.shared.errors import InvalidInput, TransientError


@dataclass(slots=True)
class EmbeddingUsage:
    """Running counters of one embedder (read with ``snapshot()``)."""

    requests: int = 0  # successful provider calls (or local encode batches)
    texts: int = 0
    tokens: int = 0  # as the provider billed them (prompt_tokens), or counted locally
    retries: int = 0  # failed attempts that were retried
    truncated: int = 0  # inputs cut to the model's window (only when truncation is enabled)

    def snapshot(self) -> EmbeddingUsage:
        return replace(self)


@runtime_checkable
class Embedder(Protocol):
    name: str
    model: str
    dimensions: int
    # In cl100k_base tokens (the chunker's unit), the largest input this embedder accepts.
    max_input_tokens: int
    usage: EmbeddingUsage

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        """float32 array of shape (len(texts), dimensions), one unit of meaning per row."""
        ...

    async def aclose(self) -> None: ...


def validate_embeddings(vectors: np.ndarray, expected_count: int, dimensions: int) -> np.ndarray:
    """Return ``vectors`` as a C-contiguous float32 matrix, or raise TransientError."""
    if vectors.ndim != 2:
        raise TransientError(
            f"malformed embedding response: expected a 2-d matrix, got {vectors.ndim} dims"
        )
    count, dims = vectors.shape
    if count != expected_count:
        raise TransientError(
            f"malformed embedding response: expected {expected_count} vectors, got {count}"
        )
    if dims != dimensions:
        raise TransientError(
            f"malformed embedding response: expected {dimensions} dimensions, got {dims}"
        )
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if count == 0:
        return matrix
    # One pass: a squared norm (in float64, so no float32 value overflows it) is
    # non-finite exactly when the vector holds a NaN or an infinity.
    squares = np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64)
    finite = np.isfinite(squares)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise TransientError(f"malformed embedding response: non-finite value in vector #{bad}")
    zero = ~(squares > 0)
    if zero.any():
        bad = int(np.flatnonzero(zero)[0])
        raise TransientError(f"malformed embedding response: zero-norm vector #{bad}")
    return matrix


def check_inputs(texts: Sequence[str]) -> None:
    """Reject inputs no embedding service accepts, before spending a request on them."""
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"input #{index} is {type(text).__name__}, not text")
        if not text:
            raise InvalidInput(f"input #{index} is empty; embedding inputs must be non-empty")
