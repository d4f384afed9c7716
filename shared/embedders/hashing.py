"""Deterministic pseudo-embeddings for tests: no model, no network, no cost.

Words are feature-hashed (signed) into the vector, so texts sharing words are
closer than unrelated ones, which is enough to exercise search code. Never
used outside tests (``make_embedder("hash")`` exists for test configurations).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ingestd.shared.embedders.base import EmbeddingUsage, check_inputs, validate_embeddings
from ingestd.shared.tokens import count_tokens

_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    name = "hash"
    model = "hash"

    def __init__(self, dimensions: int = 384, *, max_input_tokens: int = 8191) -> None:
        if dimensions < 2:
            raise ValueError("dimensions must be >= 2")
        self.dimensions = dimensions
        self.max_input_tokens = max_input_tokens
        self.usage = EmbeddingUsage()

    async def embed(self, texts: Sequence[str], *, correlation_id: str | None = None) -> np.ndarray:
        check_inputs(texts)
        matrix = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in zip(matrix, texts, strict=True):
            self._fill(row, text)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        self.usage.requests += 1
        self.usage.texts += len(texts)
        self.usage.tokens += sum(count_tokens(t) for t in texts)
        return validate_embeddings(matrix, len(texts), self.dimensions)

    def _fill(self, row: np.ndarray, text: str) -> None:
        words = _WORD.findall(text.lower()) or [text]
        for word in words:
            digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            row[value % self.dimensions] += 1.0 if (value >> 63) & 1 else -1.0
        if not row.any():
            # The words' signed hashes cancelled out exactly: seed the vector from the whole
            # text instead, so it is still deterministic and never zero.
            seed = int.from_bytes(
                hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                "little",
            )
            row[:] = np.random.default_rng(seed).standard_normal(self.dimensions)

    async def aclose(self) -> None:
        return None
