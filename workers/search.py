"""``ingestd search``: embed a query with the configured embedder, return the nearest chunks."""

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


def search(
    conn: psycopg.Connection[Any], settings: Settings, query: str, *, k: int = 5
) -> list[dict[str, Any]]:
    wanted = space_for(settings)
    have = current_space(conn)
    if have is None:
        return []
    if (have.model, have.dimensions) != (wanted.model, wanted.dimensions):
        raise ConfigError(
            f"the database holds {have.model} vectors; the configured embedder is {wanted.model}. "
            "Search with the same embedder that ingested the documents."
        )
    embedder = build_embedder(settings)

    async def embed() -> Any:
        try:
            return await embedder.embed([query])
        finally:
            await embedder.aclose()

    vector = asyncio.run(embed())[0]
    rows = nearest_chunks(conn, vector, k=k, snippet_chars=SNIPPET_CHARS)
    for r in rows:
        r["document_id"] = str(r["document_id"])
        r["distance"] = float(r["distance"])
        r["snippet"] = " ".join(r["snippet"].split())
    return rows
