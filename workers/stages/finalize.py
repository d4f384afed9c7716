"""Finalize: prove each document is whole before calling it complete.

Every chunk has a vector and the counts agree; only then ``complete``, with the
totals. A mismatch is not papered over: the document goes back to ``chunked`` (and
on, under the kept lease, into embedding) so the missing vectors are embedded. One
query and at most two status changes, however many documents the run holds.
"""

from __future__ import annotations

from typing import Any

from ingestd.shared.db import chunks, documents
from ingestd.shared.errors import TransientError
from ingestd.shared.states import Status
from ingestd.workers.context import Member, StageContext


def run(ctx: StageContext) -> Status:
    conn = ctx.conn
    first = ctx.members[0].doc
    # Every member of a run was chunked by the same chunker.
    name, version = first["chunker"], first["chunker_version"]
    broken: list[tuple[Member, TransientError]] = []
    with conn.transaction():
        # "complete" is a promise to the user: make it durable before saying it.
        documents.durable_commit(conn)
        counts = chunks.embedding_counts_many(conn, ctx.ids, name, version)
        done: list[tuple[Member, int]] = []
        missing: list[tuple[Member, int, int]] = []
        for m in ctx.members:
            total, embedded = counts.get(m.id, (0, 0))
            try:
                if whole(total, embedded, m.doc["chunks_total"]):
                    done.append((m, embedded))
                else:
                    missing.append((m, total, embedded))
            except TransientError as err:
                broken.append((m, err))
        if done:
            ctx.advance(
                Status.COMPLETE,
                {m.id: complete_fields(embedded) for m, embedded in done},
                {
                    m.id: {
                        "chunks": embedded,
                        "tokens": m.doc["tokens_total"],
                        "embed_tokens": m.doc["embed_tokens"],
                        "cost_usd": round(float(m.doc["cost_usd"]), 8),
                    }
                    for m, embedded in done
                },
            )
        if missing:
            ctx.advance(
                Status.CHUNKED,
                {m.id: {"chunks_embedded": embedded} for m, _total, embedded in missing},
                {m.id: {"missing_vectors": total - embedded} for m, total, embedded in missing},
            )
    for m, err in broken:
        ctx.end_attempt(m, err)
    return Status.CHUNKED if missing else Status.COMPLETE


def whole(total: int, embedded: int, expected: int) -> bool:
    """Every expected chunk is stored with a vector (False: vectors are missing).
    Raises TransientError when the chunks themselves don't add up."""
    if total == 0 or total != expected:
        raise TransientError(f"finalize check failed: {total} chunks stored, {expected} expected")
    return embedded == total


def complete_fields(chunks: int) -> dict[str, Any]:
    """What ``complete`` records on the document: the count, and no error left over."""
    return {"chunks_embedded": chunks, "error_class": None, "error_message": None}
