"""What is known about the OpenAI embedding models without importing the client
(start-up checks use it; the ``openai`` package costs seconds to import)."""

from __future__ import annotations

NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
# Models that accept the ``dimensions`` parameter.
SHORTENABLE = frozenset({"text-embedding-3-small", "text-embedding-3-large"})
