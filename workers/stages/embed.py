"""Embed: chunks without a vector → token-budgeted micro-batches → vectors in pgvector.

Streamed, for a document alone: rows a group of small documents had not written yet
are restored first (``chunk.restore``); the document's unembedded chunks are streamed
(keyset pages), packed into batches that respect every API limit
(shared/batching.py), and sent with a bounded number of requests in flight. Each
batch's vectors are written as soon as it returns, with the progress counters, in one
transaction: a crash after batch k resumes at batch k+1 and the API is asked only for
what is missing.

Together, for small documents: their chunks, held since the chunk stage, share the
batches, and each chunk row is written once, with its vector, by one COPY per batch
(``chunks.copy_embedded_many``): no row written bare and updated later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from uuid import UUID

import numpy as np

from ingestd.shared.batching import BatchItem, BatchLimits, pack
from ingestd.shared.db import chunks
from ingestd.shared.db.chunks import ChunkRow
from ingestd.shared.embedders.base import Embedder, validate_embeddings
from ingestd.shared.embedders.pricing import cost_usd
from ingestd.shared.errors import IngestError
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.metrics import Metrics, metric_segment
from ingestd.workers.context import StageContext
from ingestd.workers.loop import worker_runner
from ingestd.workers.stages import chunk as chunk_stage

log = get_logger("ingestd.worker.embed")


def limits_for(s: Settings, embedder: Embedder) -> BatchLimits:
    return BatchLimits(
        max_inputs=s.batch_max_inputs,
        max_request_tokens=s.batch_max_tokens,
        max_input_tokens=embedder.max_input_tokens,
    )


def request_room(embedder: Embedder) -> Callable[[], int | None] | None:
    """How much a request may carry now, for embedders paced by a rate limit (the API's);
    None for local ones, which only the static limits bound."""
    room: Callable[[], int | None] | None = getattr(embedder, "request_room", None)
    return room


Store = Callable[[list[BatchItem], np.ndarray], int]


def run(ctx: StageContext) -> Status:
    embedder = ctx.embedder()
    if not ctx.together:
        restored = chunk_stage.restore(ctx)
        if restored:
            log.info("missing chunk rows restored", chunks=restored)
    items, store = (_held if ctx.together else _streamed)(ctx, embedder.model)
    worker_runner().run(
        embed_batches(
            pack(items, limits_for(ctx.settings, embedder), request_room(embedder)),
            embedder,
            concurrency=ctx.settings.embed_concurrency,
            correlation_id=str(ctx.correlation_id),
            store=store,
            checkpoint=ctx.checkpoint,
            metrics=ctx.metrics,
        )
    )
    with ctx.conn.transaction():
        ctx.advance(
            Status.EMBEDDED,
            {m.id: {} for m in ctx.members},
            {m.id: {"vectors_written": m.embedded} for m in ctx.members},
        )
    return Status.EMBEDDED


def _streamed(ctx: StageContext, model: str) -> tuple[Iterator[BatchItem], Store]:
    """The document's unembedded chunks, read in keyset pages; vectors written onto them."""
    (member,) = ctx.members
    doc = member.doc
    name, version = doc["chunker"], doc["chunker_version"]
    items = (
        BatchItem(r.ordinal, r.text, r.token_count)
        for r in chunks.iter_unembedded(ctx.conn, member.id, name, version)
    )

    def store(batch: list[BatchItem], vectors: np.ndarray) -> int:
        tokens = sum(b.token_count for b in batch)
        price = cost_usd(model, tokens)
        with ctx.conn.transaction():
            n = chunks.write_vectors(
                ctx.conn, member.id, name, version, model, [b.key for b in batch], vectors
            )
            chunks.record_embedded(ctx.conn, ctx.owner, model, {member.id: (n, tokens, price)})
        member.embedded += n
        return n

    return items, store


def _held(ctx: StageContext, model: str) -> tuple[Iterator[BatchItem], Store]:
    """The members' chunks, held since the chunk stage, sharing batches; each row written
    once, with its vector."""
    by_id = {m.id: m for m in ctx.members}
    first = ctx.members[0].doc
    # The chunk stage recorded the same chunker on every member.
    name, version = first["chunker"], first["chunker_version"]
    items = (
        BatchItem((m.id, c.ordinal), c.text, c.token_count) for m in ctx.members for c in m.chunks
    )

    def row(key: tuple[UUID, int]) -> tuple[UUID, ChunkRow]:
        doc_id, ordinal = key
        return doc_id, by_id[doc_id].chunks[ordinal]

    def store(batch: list[BatchItem], vectors: np.ndarray) -> int:
        tokens: dict[UUID, int] = {}
        for b in batch:
            tokens[b.key[0]] = tokens.get(b.key[0], 0) + b.token_count
        price = {i: cost_usd(model, t) for i, t in tokens.items()}
        with ctx.conn.transaction():
            written = chunks.copy_embedded_many(
                ctx.conn, name, version, model, [row(b.key) for b in batch], vectors
            )
            chunks.record_embedded(
                ctx.conn,
                ctx.owner,
                model,
                {i: (written.get(i, 0), tokens[i], price[i]) for i in tokens},
            )
        for i in tokens:
            # What the database now counts, kept on the held row for the final check.
            doc = by_id[i].doc
            by_id[i].embedded += written.get(i, 0)
            doc["embed_tokens"] += tokens[i]
            doc["cost_usd"] = float(doc["cost_usd"]) + price[i]
        return sum(written.values())

    return items, store


async def embed_batches(
    batches: Iterable[list[BatchItem]],
    embedder: Embedder,
    *,
    concurrency: int,
    correlation_id: str,
    store: Callable[[list[BatchItem], np.ndarray], int],
    checkpoint: Callable[..., None],
    metrics: Metrics,
) -> int:
    """Send ``batches`` with at most ``concurrency`` requests in flight and ``store``
    each one's validated vectors as it returns; return the rows stored.

    A stop request is honoured between batches (what returned is kept); on any
    error the requests still in flight are cancelled and the error propagates.
    """
    in_flight: set[asyncio.Task[tuple[list[BatchItem], np.ndarray]]] = set()
    written = 0
    model = embedder.model

    async def call(batch: list[BatchItem]) -> tuple[list[BatchItem], np.ndarray]:
        vectors = await embedder.embed([b.text for b in batch], correlation_id=correlation_id)
        return batch, vectors

    def stored(batch: list[BatchItem], vectors: np.ndarray) -> int:
        # The embedder validates too; this is the last check before the table.
        vectors = validate_embeddings(vectors, len(batch), embedder.dimensions)
        n = store(batch, vectors)
        tokens = sum(b.token_count for b in batch)
        metrics.incr("embed.requests")
        metrics.incr("embed.inputs", len(batch))
        metrics.incr("embed.tokens_estimated", tokens)
        metrics.incr(f"tokens.{metric_segment(model)}", tokens)
        metrics.incr(
            f"cost.{metric_segment(model)}.microusd", round(cost_usd(model, tokens) * 1_000_000)
        )
        return n

    async def drain(until: int) -> None:
        nonlocal written
        while len(in_flight) > until:
            # Wake every second even while requests are slow (retries, a model
            # loading): the supervisor kills a worker whose heartbeat goes stale.
            done, _ = await asyncio.wait(
                in_flight, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                in_flight.discard(task)
                written += stored(*task.result())  # raises the batch's error
            checkpoint(stoppable=False)

    try:
        with context.bind_stage("embedding"):
            for batch in batches:
                await drain(concurrency - 1)
                checkpoint()
                in_flight.add(asyncio.create_task(call(batch)))
            await drain(0)
    except BaseException:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        raise
    return written


__all__ = ["IngestError", "embed_batches", "run"]
