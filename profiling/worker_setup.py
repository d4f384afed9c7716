"""A Worker for benchmarks and profiles, set up the way a daemon's worker process sets
itself up where that matters for what they measure (workers/process.py), without the
logging, metrics and supervisor channel they do not need."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.malloc import tune_malloc
from ingestd.shared.settings import Settings
from ingestd.workers.base import Worker
from ingestd.workers.loop import close_runner


@contextlib.contextmanager
def daemon_like_worker(settings: Settings, url: str, owner: str, slot: int = 0) -> Iterator[Worker]:
    """The malloc settings, one embedder for every document, and on the way out the
    embedder's HTTP client closed on the worker's loop, then the worker."""
    tune_malloc()
    embedder = build_embedder(settings)
    worker = Worker(settings, url=url, owner=owner, slot=slot, embedder_factory=lambda: embedder)
    try:
        yield worker
    finally:
        close_runner(embedder)
        worker.close()
