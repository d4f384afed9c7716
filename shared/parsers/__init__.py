"""Local parsers: a document's bytes in, a stream of bounded Markdown-like text blocks out.

Memory never grows with the document: text is decoded incrementally, HTML is
fed to the parser in slices, PDFs are read page by page through range reads and
DOCX/PPTX XML is parsed incrementally out of the zip archive.
A block may end anywhere, even mid-line; the chunker copes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.docx import iter_docx_blocks
from ingestd.shared.parsers.html_md import iter_html_blocks
from ingestd.shared.parsers.mime import (
    APPLICATION_PDF,
    DOCX,
    PPTX,
    SUPPORTED_MIME_TYPES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    UNRECOGNISED,
    detect_mime,
    normalize_mime,
    split_mime,
)
from ingestd.shared.parsers.pdf import iter_pdf_blocks
from ingestd.shared.parsers.plaintext import iter_text_blocks
from ingestd.shared.parsers.pptx import iter_pptx_blocks
from ingestd.shared.parsers.progress import Progress, ignore

__all__ = [
    "APPLICATION_PDF",
    "DEFAULT_BLOCK_CHARS",
    "DOCX",
    "PARSER_VERSION",
    "PPTX",
    "SUPPORTED_MIME_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "detect_mime",
    "iter_blocks",
    "normalize_mime",
    "parser_name",
    "reads_ranges",
]

# Bump when any local parser's output changes for the same input, so stored
# chunks can be told apart from what a re-parse would produce.
PARSER_VERSION = 1

DEFAULT_BLOCK_CHARS = 65536

_NAMES = {
    TEXT_PLAIN: "local-text",
    TEXT_MARKDOWN: "local-text",
    TEXT_HTML: "local-html",
    APPLICATION_PDF: "local-pdfium",
    DOCX: "local-docx",
    PPTX: "local-pptx",
}

# What ingestion's detection reads; the parse stage reads as much to say why a
# document it refused is refused.
SNIFF_BYTES = 4096


def parser_name(mime_type: str) -> str:
    """The name recorded for the parser that handles ``mime_type``."""
    return _NAMES[normalize_mime(mime_type)]


def reads_ranges(mime_type: str) -> bool:
    """Whether the parser for ``mime_type`` seeks before most reads (a read-ahead
    buffer would be wasted); False for types it does not support."""
    return split_mime(mime_type)[0] == APPLICATION_PDF


def _unrecognised(stream: BinaryIO, filename: str) -> InvalidInput:
    """Why ingestion's detection refused this document, found again from its bytes."""
    head = stream.read(SNIFF_BYTES)
    try:
        mime = detect_mime(filename, head)
    except InvalidInput as exc:
        return exc
    # Detection has learnt the type since the document was stored.
    return InvalidInput(
        f"stored as {UNRECOGNISED} by an older version; its content is {mime}: "
        "delete it and ingest it again"
    )


def iter_blocks(
    stream: BinaryIO,
    mime_type: str,
    *,
    block_chars: int = DEFAULT_BLOCK_CHARS,
    filename: str = "",
    progress: Progress = ignore,
) -> Iterator[str]:
    """Yield the document's text as blocks of at most ``block_chars`` characters.

    ``stream`` is read with ``read(n)`` only; for PDF, DOCX and PPTX it must also
    be seekable. Raises InvalidInput for documents that cannot be parsed (binary
    data or bytes no text encoding fits, empty, encrypted or corrupt files, a PDF
    without a text layer) or that are bigger inside than ``limits`` allow (pages,
    text per page, zip entries, inflated size and ratio). A document stored as
    ``application/octet-stream`` (ingestion could not tell its type) is sniffed
    again, with its ``filename``, to raise what is wrong with it. ``progress`` hears
    how far the PDF and HTML parsers have read, text or not (``parsers.progress``).
    """
    check_block_chars(block_chars)
    if split_mime(mime_type)[0] == UNRECOGNISED:
        raise _unrecognised(stream, filename)
    mime = normalize_mime(mime_type)
    charset = split_mime(mime_type)[1]
    if mime == APPLICATION_PDF:
        return iter_pdf_blocks(stream, block_chars=block_chars, progress=progress)
    if mime == DOCX:
        return iter_docx_blocks(stream, block_chars=block_chars)
    if mime == PPTX:
        return iter_pptx_blocks(stream, block_chars=block_chars)
    if mime == TEXT_HTML:
        return iter_html_blocks(stream, block_chars=block_chars, charset=charset, progress=progress)
    return iter_text_blocks(stream, block_chars=block_chars, charset=charset)
