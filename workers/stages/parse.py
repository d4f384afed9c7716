"""Parse: original bytes (a large object) → Markdown-like text in ``parsed_segments``.

Local parsers stream: blocks are read from the blob on demand and written in
groups, so neither the file nor its text is ever whole in memory. Small documents
travelling together are read in one go (one blob read, one COPY of segments), and
their blocks stay in memory for the chunk stage. The remote
LlamaParse path submits the file and parks the document in ``awaiting_parse``
until the signed webhook (or a poll after the deadline) brings the result.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import islice
from typing import Any, BinaryIO

from ingestd.shared.db import blobs, segments
from ingestd.shared.db.blobs import BlobReader, open_blob
from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import PARSER_VERSION, iter_blocks, parser_name, reads_ranges
from ingestd.shared.states import Status
from ingestd.workers.context import Member, StageContext

# Segments per COPY/transaction: ~4 MB of text at 64 KB blocks.
GROUP = 64


def run(ctx: StageContext) -> Status:
    if ctx.settings.parser == "llamaparse":
        from ingestd.workers.stages import parse_remote

        return parse_remote.run(ctx)
    if ctx.together:
        return run_together(ctx)
    return run_local(ctx)


def run_together(ctx: StageContext) -> Status:
    data = blobs.read_whole(ctx.conn, [m.doc["blob_oid"] for m in ctx.members])

    def parse_one(m: Member) -> None:
        with ctx.budget_of(m):
            blocks = iter_blocks(
                io.BytesIO(data.pop(m.doc["blob_oid"])),
                m.doc["mime_type"],
                filename=m.doc["filename"],
                progress=ctx.progress,
            )
            m.blocks = [b for b in blocks if b]
        m.fields, m.details = parsed(
            m.doc["mime_type"],
            len(m.blocks),
            sum(len(b) for b in m.blocks),
            getattr(blocks, "pages", None),
            getattr(blocks, "encoding", None),
        )

    ctx.per_member(parse_one)
    if not ctx.members:
        return ctx.status
    ctx.checkpoint()
    with ctx.conn.transaction():
        segments.clear(ctx.conn, ctx.ids)
        segments.write_many(
            ctx.conn, ((m.id, seq, b) for m in ctx.members for seq, b in enumerate(m.blocks))
        )
        ctx.advance_recorded(Status.PARSED)
    return Status.PARSED


def run_local(ctx: StageContext) -> Status:
    doc = ctx.doc
    if reads_ranges(doc["mime_type"]):
        # PDFium seeks before most reads: a read-ahead buffer would be thrown away
        # (and refetched) each time, so it reads exact ranges instead.
        stream: BinaryIO = BlobReader(ctx.conn, doc["blob_oid"], doc["size_bytes"])  # type: ignore[assignment]
    else:
        stream = open_blob(ctx.conn, doc["blob_oid"], doc["size_bytes"])
    # Progress, not output, is what heartbeats and keeps to the budget: a PDF of blank
    # pages yields nothing for a long while (``ctx.progress``).
    blocks = iter_blocks(stream, doc["mime_type"], filename=doc["filename"], progress=ctx.progress)
    segments.clear(ctx.conn, ctx.doc_id)  # what an interrupted attempt left; one statement
    written = chars = 0
    pending = _counted(blocks)
    while True:
        group = []  # let the previous group go before building the next
        group = list(islice(pending, GROUP))
        if not group:
            break
        ctx.checkpoint()
        with ctx.conn.transaction():
            written += segments.write(ctx.conn, ctx.doc_id, written, group)
        chars += sum(len(g) for g in group)
    fields, details = parsed(
        doc["mime_type"], written, chars, pending.pages, getattr(blocks, "encoding", None)
    )
    with ctx.conn.transaction():
        ctx.transition(Status.PARSED, fields=fields, details=details)
    return Status.PARSED


def parsed(
    mime_type: str, segments: int, chars: int, pages: int | None, encoding: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a local parse records on the document, and in its event (with the text
    encoding found, for text documents); refuses an empty result."""
    if segments == 0 or chars == 0:
        raise InvalidInput("document is empty: no text could be extracted")
    fields = {
        "parsed_segments": segments,
        "parsed_chars": chars,
        "pages": pages,
        "parser": f"{parser_name(mime_type)}@{PARSER_VERSION}",
    }
    details: dict[str, Any] = {"segments": segments, "chars": chars}
    if encoding is not None:
        details["encoding"] = encoding
    return fields, details


class _counted:
    """Pass blocks through, skipping empty ones; PDFs report pages if the parser tells."""

    def __init__(self, blocks: Iterator[str]) -> None:
        self._blocks = blocks
        self.pages: int | None = getattr(blocks, "pages", None)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            block = next(self._blocks)
            if block:
                return block
