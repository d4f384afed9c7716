"""Chunk: parsed segments → token-aware chunks in the public ``chunks`` table.

Streamed: segments are read a page at a time, chunks are written by COPY in
groups as they are produced. The chunker is deterministic in the text and its
settings, which are recorded on the document, so a retried attempt rewrites
exactly the same chunk identities, and ``restore`` can bring back chunks that a
group of small documents had not written yet (a group writes its rows only in the
embed stage, together with their vectors).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from ingestd.shared.chunking import Chunker
from ingestd.shared.db import chunks, segments
from ingestd.shared.db.chunks import ChunkRow
from ingestd.shared.embedders.setup import input_limit
from ingestd.shared.errors import IngestError, InvalidInput
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.workers.context import Member, StageContext

GROUP = 512  # chunks per COPY


def make_chunker(s: Settings, max_input_tokens: int | None = None) -> Chunker:
    limit = max_input_tokens or 8191
    target = min(s.chunk_target_tokens, limit)
    overlap = min(s.chunk_overlap_tokens, max(target // 4, 0))
    return Chunker(target_tokens=target, overlap_tokens=overlap, max_tokens=limit)


def run(ctx: StageContext) -> Status:
    chunker = make_chunker(ctx.settings, input_limit(ctx.settings))
    if ctx.together:
        return run_together(ctx, chunker)
    # What an earlier attempt left (one statement, so its own transaction).
    chunks.delete_for_chunking(ctx.conn, ctx.doc_id, chunker.NAME, chunker.VERSION)
    produced = rows(chunker, segments.read(ctx.conn, ctx.doc_id))
    total = tokens = 0
    while True:
        group = []  # let the previous group go before building the next
        group = list(islice(produced, GROUP))
        if not group:
            break
        ctx.checkpoint()
        with ctx.conn.transaction():
            total += chunks.copy_chunks(ctx.conn, ctx.doc_id, chunker.NAME, chunker.VERSION, group)
        tokens += sum(c.token_count for c in group)
    fields, details = chunked(chunker, total, tokens)
    with ctx.conn.transaction():
        # Parsed segments are kept: re-chunking with a new chunker version must not
        # pay for parsing again (LlamaParse bills per page).
        ctx.transition(Status.CHUNKED, fields=fields, details=details)
    return Status.CHUNKED


def run_together(ctx: StageContext, chunker: Chunker) -> Status:
    """Chunk each member's blocks, held since parsing; the rows are written in the embed
    stage, each with its vector (one write per row instead of two). A member resumed
    alone before that restores them from its parsed segments (``restore``)."""

    def chunk_one(m: Member) -> None:
        blocks, m.blocks = m.blocks, []  # the text is not needed past this point
        m.chunks = list(rows(chunker, blocks))
        m.fields, m.details = chunked(chunker, len(m.chunks), sum(c.token_count for c in m.chunks))

    ctx.per_member(chunk_one)
    if not ctx.members:
        return ctx.status
    ctx.checkpoint()
    with ctx.conn.transaction():
        chunks.delete_for_chunking(ctx.conn, ctx.ids, chunker.NAME, chunker.VERSION)
        ctx.advance_recorded(Status.CHUNKED)
    return Status.CHUNKED


def rows(chunker: Chunker, blocks: Iterable[str]) -> Iterator[ChunkRow]:
    """The chunker's output as rows of the ``chunks`` table, lazily."""
    for c in chunker.chunks(blocks):
        yield ChunkRow(c.ordinal, c.text, c.token_count, c.heading)


def chunked(chunker: Chunker, total: int, tokens: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """What chunking records on the document, and in its event; refuses no chunks."""
    if total == 0:
        raise InvalidInput("document has no text to chunk (only whitespace)")
    fields = {
        "chunker": chunker.NAME,
        "chunker_version": chunker.VERSION,
        "chunker_settings": settings_of(chunker),
        "chunks_total": total,
        "tokens_total": tokens,
        "chunks_embedded": 0,
    }
    return fields, {"chunks": total, "tokens": tokens}


def settings_of(chunker: Chunker) -> dict[str, int]:
    return {
        "target_tokens": chunker.target_tokens,
        "overlap_tokens": chunker.overlap_tokens,
        "max_tokens": chunker.max_tokens,
    }


def restore(ctx: StageContext) -> int:
    """Write the rows of the document's chunks that are missing from ``chunks``, by
    chunking its parsed segments again with the recorded settings; returns how many.

    Only a document that travelled in a group can miss rows here (a crash or a split
    before all its vectors were written). Anything that does not re-chunk to exactly
    what was recorded is an error: nothing is guessed.
    """
    doc = ctx.doc
    name, version = doc["chunker"], doc["chunker_version"]
    expected = doc["chunks_total"]
    if chunks.embedding_counts(ctx.conn, ctx.doc_id, name, version)[0] >= expected:
        return 0
    recorded = doc["chunker_settings"]
    if name != Chunker.NAME or version != Chunker.VERSION or not recorded:
        raise IngestError(
            f"{expected} chunks were recorded but some rows are missing, and they cannot be"
            f" re-chunked identically (chunker {name} v{version}, settings {recorded});"
            " re-queue the document with `ingestd retry`"
        )
    chunker = Chunker(**recorded)
    present = chunks.ordinals(ctx.conn, ctx.doc_id, name, version)
    total = tokens = 0
    missing: list[ChunkRow] = []
    for row in rows(chunker, segments.read(ctx.conn, ctx.doc_id)):
        total += 1
        tokens += row.token_count
        if row.ordinal not in present:
            missing.append(row)
    if (total, tokens) != (expected, doc["tokens_total"]):
        raise IngestError(
            f"re-chunking gave {total} chunks and {tokens} tokens where {expected} and"
            f" {doc['tokens_total']} were recorded; re-queue the document with `ingestd retry`"
        )
    with ctx.conn.transaction():
        return chunks.copy_chunks(ctx.conn, ctx.doc_id, name, version, missing)
