"""Chunk: parsed segments → token-aware chunks in the public ``chunks`` table.

Streamed: segments are read a page at a time, chunks are written by COPY in
groups as they are produced. The chunker is deterministic in the text alone,
so a retried attempt rewrites exactly the same chunk identities.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from shared.chunking import Chunker
from shared.db import chunks, segments
from shared.db.chunks import ChunkRow
from shared.errors import InvalidInput
from shared.settings import Settings
from shared.states import Status
from workers.context import StageContext
from workers.embedding import input_limit

GROUP = 512  # chunks per COPY


def make_chunker(s: Settings, max_input_tokens: int | None = None) -> Chunker:
    limit = max_input_tokens or 8191
    target = min(s.chunk_target_tokens, limit)
    overlap = min(s.chunk_overlap_tokens, max(target // 4, 0))
    return Chunker(target_tokens=target, overlap_tokens=overlap, max_tokens=limit)


def run(ctx: StageContext) -> Status:
    chunker = make_chunker(ctx.settings, input_limit(ctx.settings))
    # What an interrupted attempt left (one statement, so its own transaction).
    chunks.delete_unembedded(ctx.conn, ctx.doc_id, chunker.NAME, chunker.VERSION)
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
        "chunks_total": total,
        "tokens_total": tokens,
        "chunks_embedded": 0,
    }
    return fields, {"chunks": total, "tokens": tokens}
