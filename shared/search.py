"""Search: embed a query with the configured embedder, return the nearest chunks.

Shared by ``ingestd search`` (one query, an embedder built and closed for it) and the
HTTP child's ``GET /v1/search`` (one embedder kept warm for the life of the process:
the local model takes ~24 s to load, a query ~10 ms).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from ingestd.shared.db.chunks import nearest_chunks
from ingestd.shared.db.space import current_space
from ingestd.shared.embedders.setup import build_embedder, space_for
from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import Settings

SNIPPET_CHARS = 160
MAX_K = 100


def space_ready(conn: psycopg.Connection[Any], settings: Settings) -> bool:
    """False when nothing has been embedded yet; ConfigError when the database holds
    vectors of another model than the configured one (their distances mean nothing)."""
    wanted = space_for(settings)
    have = current_space(conn)
    if have is None:
        return False
    if (have.model, have.dimensions) != (wanted.model, wanted.dimensions):
        raise ConfigError(
            f"the database holds {have.model} vectors; the configured embedder is {wanted.model}. "
            "Search with the same embedder that ingested the documents."
        )
    return True


def nearest(conn: psycopg.Connection[Any], vector: Any, *, k: int) -> list[dict[str, Any]]:
    """The ``k`` nearest chunks of complete documents, as JSON-ready dicts."""
    rows = nearest_chunks(conn, vector, k=k, snippet_chars=SNIPPET_CHARS)
    for r in rows:
        r["document_id"] = str(r["document_id"])
        r["distance"] = float(r["distance"])
        r["snippet"] = " ".join(r["snippet"].split())
    return rows


def search(
    conn: psycopg.Connection[Any], settings: Settings, query: str, *, k: int = 5
) -> list[dict[str, Any]]:
    """One query in this process: builds the embedder, embeds, closes it."""
    if not space_ready(conn, settings):
        return []
    embedder = build_embedder(settings)

    async def embed() -> Any:
        try:
            return await embedder.embed([query])
        finally:
            await embedder.aclose()

    vector = asyncio.run(embed())[0]
    return nearest(conn, vector, k=k)
