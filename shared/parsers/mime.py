"""Which parser a document needs: content sniffing first, then the file name."""

from __future__ import annotations

import codecs
import os

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers.utf8 import binary_error

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"

SUPPORTED_MIME_TYPES = frozenset({TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, APPLICATION_PDF})

_EXTENSIONS = {
    ".txt": TEXT_PLAIN,
    ".text": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".pdf": APPLICATION_PDF,
}
_ALIASES = {
    "text/x-markdown": TEXT_MARKDOWN,
    "application/xhtml+xml": TEXT_HTML,
    "application/x-pdf": APPLICATION_PDF,
}
_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

# PDF readers accept the header anywhere in the first KiB.
_PDF_HEADER_WINDOW = 1024
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")


def normalize_mime(mime_type: str) -> str:
    """``Text/HTML; charset=UTF-8`` -> ``text/html``; InvalidInput when unsupported."""
    main, *params = (part.strip() for part in mime_type.split(";"))
    main = _ALIASES.get(main.lower(), main.lower())
    if main not in SUPPORTED_MIME_TYPES:
        raise InvalidInput(f"unsupported MIME type {main[:100]!r}")
    for param in params:
        key, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if key.strip().lower() == "charset" and charset not in _UTF8_CHARSETS:
            raise InvalidInput(f"unsupported charset {charset[:40]!r}; only UTF-8 is supported")
    return main


def _looks_like_html(head: bytes) -> bool:
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:256].lower()
    if start.startswith(b"<?xml"):
        return b"<html" in head[:_PDF_HEADER_WINDOW].lower()
    return start.startswith(_HTML_STARTS)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        # Not final: the head may end in the middle of a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8")("strict").decode(head, False)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) < 0x20 and ch not in "\t\n\r\f\v\x1b")
    return controls <= 0.1 * max(len(text), 1)


def detect_mime(filename: str, head: bytes) -> str:
    """The MIME type of a document from its name and first bytes (≥ 1 KiB advised).

    A PDF header wins over any name; a text extension decides between plain
    text, Markdown and HTML; an unknown extension is sniffed for HTML, then
    accepted as plain text only when the bytes look like UTF-8 text.
    """
    ext = os.path.splitext(filename)[1].lower()
    if head.startswith(b"%PDF-"):
        return APPLICATION_PDF
    if ext == ".pdf":
        if b"%PDF-" in head[:_PDF_HEADER_WINDOW]:
            return APPLICATION_PDF
        raise InvalidInput("file is named .pdf but has no PDF header")
    if ext in _EXTENSIONS:
        if b"\x00" in head:
            raise binary_error()
        return _EXTENSIONS[ext]
    if _looks_like_html(head):
        return TEXT_HTML
    if _looks_like_text(head):
        return TEXT_PLAIN
    kind = f"'{ext[:20]}' " if ext else ""
    raise InvalidInput(f"unsupported binary {kind}file: only text, Markdown, HTML and PDF")
