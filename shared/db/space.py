"""The embedding space: which model's vectors the ``chunks.embedding`` column holds.

The column is created untyped; the first daemon start fixes its dimension to
the configured model's and records the model in ``ingestd_meta``. Starting with
another model afterwards is refused: switching is the explicit ``ingestd
reembed``, never silent corruption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ingestd.shared.db import jobs
from ingestd.shared.errors import ConfigError

_KEY = "embedding_space"


@dataclass(frozen=True)
class EmbeddingSpace:
    embedder: str
    model: str
    dimensions: int

    def as_json(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "model": self.model, "dimensions": self.dimensions}


def current_space(conn: psycopg.Connection[Any]) -> EmbeddingSpace | None:
    row = conn.execute("SELECT value FROM ingestd_meta WHERE key = %s", (_KEY,)).fetchone()
    if row is None:
        return None
    v = row["value"]
    return EmbeddingSpace(v["embedder"], v["model"], int(v["dimensions"]))


def ensure_space(conn: psycopg.Connection[Any], wanted: EmbeddingSpace) -> None:
    """Fix the space on first use; refuse a different one afterwards."""
    with conn.transaction():
        conn.execute("LOCK TABLE ingestd_meta IN SHARE ROW EXCLUSIVE MODE")
        have = current_space(conn)
        if have is None:
            _set_space(conn, wanted)
            return
    if (have.model, have.dimensions) != (wanted.model, wanted.dimensions):
        raise ConfigError(
            f"the database holds {have.model} vectors ({have.dimensions} dims) but the configured "
            f"embedder is {wanted.embedder}/{wanted.model} ({wanted.dimensions} dims). Either "
            f"configure {have.embedder} again, or run `ingestd reembed --yes` to drop every vector "
            f"and re-embed all documents with the new model."
        )


def _set_space(conn: psycopg.Connection[Any], space: EmbeddingSpace) -> None:
    # The HNSW index depends on the column type; it is rebuilt for the new space.
    conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
    conn.execute(f"ALTER TABLE chunks ALTER COLUMN embedding TYPE vector({int(space.dimensions)})")
    conn.execute(
        "INSERT INTO ingestd_meta (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_KEY, Jsonb(space.as_json())),
    )


def switch_space(conn: psycopg.Connection[Any], new: EmbeddingSpace) -> int:
    """Drop every vector, retype the column, requeue embedded documents. Returns
    the number of documents that will be re-embedded."""
    with conn.transaction():
        conn.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
        conn.execute(
            "UPDATE chunks SET embedding = NULL, embedding_model = NULL, embedded_at = NULL"
            " WHERE embedding IS NOT NULL"
        )
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        conn.execute("ALTER TABLE chunks ALTER COLUMN embedding TYPE vector")
        _set_space(conn, new)
        return jobs.requeue_for_reembed(conn, {"model": new.model, "dimensions": new.dimensions})
