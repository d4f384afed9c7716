"""Helpers the worker tests share: drain the queue with one worker, ingest texts."""

from __future__ import annotations

import io
from typing import Any

from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.shared.ingest import ingest_stream
from ingestd.workers.base import Worker
from ingestd.workers.loop import close_runner


def run_worker(
    settings: Any, db_url: str, embedder: Any = None, owner: str = "test:1:0:0"
) -> Worker:
    """Drain the queue with one worker, then close it as the daemon's worker process
    closes itself: the embedder's HTTP client on the worker's loop, then the worker."""
    embedder = embedder or HashEmbedder(dimensions=settings.embedding_dimensions or 384)
    worker = Worker(settings, url=db_url, owner=owner, embedder_factory=lambda: embedder)
    try:
        worker.run(until_idle=True)
    finally:
        close_runner(embedder)
        worker.close()
    return worker


def ingest_texts(
    conn: Any, texts: dict[str, bytes], mime_type: str = "text/markdown"
) -> dict[str, Any]:
    """Each text as a document named by its key; their ids by name."""
    return {
        name: ingest_stream(
            conn, io.BytesIO(data), source=f"test://{name}", filename=name, mime_type=mime_type
        ).document_id
        for name, data in texts.items()
    }
