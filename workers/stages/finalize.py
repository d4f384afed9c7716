"""Finalize: prove the document is whole before calling it complete.

Every chunk has a vector and the counts agree; only then ``complete``, with
the totals. A mismatch is not papered over: the document goes back to
``chunked`` so the missing vectors are embedded.
"""

from __future__ import annotations

from typing import Any

from ingestd.shared.db import chunks
from ingestd.shared.errors import TransientError
from ingestd.shared.states import Status
from ingestd.workers.context import StageContext


def run(ctx: StageContext) -> Status:
    doc = ctx.doc
    with ctx.conn.transaction():
        # "complete" is a promise to the user: make it durable before saying it.
        ctx.conn.execute("SET LOCAL synchronous_commit = on")
        total, embedded = chunks.embedding_counts(
            ctx.conn, ctx.doc_id, doc["chunker"], doc["chunker_version"]
        )
        if not whole(total, embedded, doc["chunks_total"]):
            ctx.transition(
                Status.CHUNKED,
                fields={"chunks_embedded": embedded},
                details={"missing_vectors": total - embedded},
            )
            return Status.CHUNKED
        ctx.transition(
            Status.COMPLETE,
            fields=complete_fields(embedded),
            details={
                "chunks": total,
                "tokens": doc["tokens_total"],
                "embed_tokens": doc["embed_tokens"],
                "cost_usd": float(doc["cost_usd"]),
            },
        )
    return Status.COMPLETE


def whole(total: int, embedded: int, expected: int) -> bool:
    """Every expected chunk is stored with a vector (False: vectors are missing).
    Raises TransientError when the chunks themselves don't add up."""
    if total == 0 or total != expected:
        raise TransientError(f"finalize check failed: {total} chunks stored, {expected} expected")
    return embedded == total


def complete_fields(chunks: int) -> dict[str, Any]:
    """What ``complete`` records on the document: the count, and no error left over."""
    return {"chunks_embedded": chunks, "error_class": None, "error_message": None}
