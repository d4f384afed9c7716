"""Local parsers: a document's bytes in, a stream of bounded Markdown-like text blocks out.

Memory never grows with the document: text is decoded incrementally, HTML is
fed to the parser in slices and PDFs are read page by page through range reads.
A block may end anywhere, even mid-line; the chunker copes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.html_md import iter_html_blocks
from ingestd.shared.parsers.mime import (
    APPLICATION_PDF,
    SUPPORTED_MIME_TYPES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    detect_mime,
    normalize_mime,
)
from ingestd.shared.parsers.pdf import iter_pdf_blocks
from ingestd.shared.parsers.plaintext import iter_text_blocks

__all__ = [
    "APPLICATION_PDF",
    "DEFAULT_BLOCK_CHARS",
    "PARSER_VERSION",
    "SUPPORTED_MIME_TYPES",
    "TEXT_HTML",
    "TEXT_MARKDOWN",
    "TEXT_PLAIN",
    "detect_mime",
    "iter_blocks",
    "normalize_mime",
    "parser_name",
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
}


def parser_name(mime_type: str) -> str:
    """The name recorded for the parser that handles ``mime_type``."""
    return _NAMES[normalize_mime(mime_type)]


def iter_blocks(
    stream: BinaryIO, mime_type: str, *, block_chars: int = DEFAULT_BLOCK_CHARS
) -> Iterator[str]:
    """Yield the document's text as blocks of at most ``block_chars`` characters.

    ``stream`` is read with ``read(n)`` only; for PDFs it must also be seekable.
    Raises InvalidInput for documents that cannot be parsed (bad encoding,
    binary data, empty, encrypted or corrupt PDF, PDF without a text layer) or
    that are bigger inside than ``limits`` allow (pages, text per page).
    """
    mime = normalize_mime(mime_type)
    check_block_chars(block_chars)
    if mime == APPLICATION_PDF:
        return iter_pdf_blocks(stream, block_chars=block_chars)
    if mime == TEXT_HTML:
        return iter_html_blocks(stream, block_chars=block_chars)
    return iter_text_blocks(stream, block_chars=block_chars)
