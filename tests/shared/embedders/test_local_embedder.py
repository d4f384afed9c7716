from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ingestd.shared.embedders import local as local_module
from ingestd.shared.embedders.local import LocalEmbedder
from ingestd.shared.errors import ConfigError, InvalidInput


def test_missing_dependencies_are_a_config_error_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(local_module, "missing_dependencies", lambda: ["sentence_transformers"])
    with pytest.raises(ConfigError) as info:
        LocalEmbedder()
    message = str(info.value)
    assert "sentence_transformers" in message
    assert "pip install 'ingestd[local]'" in message
    assert "torch==2.13.0" in message


@pytest.mark.slow
def test_local_embedder_gives_unit_384_vectors_with_meaning() -> None:
    texts = [
        "The cat sleeps on the warm windowsill.",
        "A kitten is napping by the sunny window.",
        "Quarterly revenue grew by eight percent after the merger.",
    ]

    async def main() -> tuple[np.ndarray, LocalEmbedder]:
        embedder = LocalEmbedder(batch_size=8)
        await embedder.load()
        try:
            return await embedder.embed(texts), embedder
        finally:
            await embedder.aclose()

    vectors, embedder = asyncio.run(main())
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    similar = float(vectors[0] @ vectors[1])
    unrelated = float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.2, (similar, unrelated)
    assert embedder.window == 256
    assert embedder.max_input_tokens * 2 <= embedder.window
    assert embedder.usage.texts == 3

    async def too_long() -> None:
        strict = LocalEmbedder()
        await strict.embed(["word " * 400])

    with pytest.raises(InvalidInput, match="word-pieces"):
        asyncio.run(too_long())

    async def truncated() -> tuple[np.ndarray, int]:
        lenient = LocalEmbedder(truncate=True)
        out = await lenient.embed(["word " * 400])
        return out, lenient.usage.truncated

    out, count = asyncio.run(truncated())
    assert out.shape == (1, 384)
    assert count == 1
