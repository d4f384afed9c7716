"""Which parser a document needs: content sniffing first, then the file name."""

from __future__ import annotations

import codecs
import os

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import encoding
from ingestd.shared.parsers.decode import binary_error, control_heavy

TEXT_PLAIN = "text/plain"
TEXT_MARKDOWN = "text/markdown"
TEXT_HTML = "text/html"
APPLICATION_PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
# What ingestion stores when detection refused a document: the parse stage sniffs
# it again to record why (shared.ingest.sniff_mime).
UNRECOGNISED = "application/octet-stream"

SUPPORTED_MIME_TYPES = frozenset(
    {TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML, APPLICATION_PDF, DOCX, PPTX}
)
TEXT_TYPES = frozenset({TEXT_PLAIN, TEXT_MARKDOWN, TEXT_HTML})

_EXTENSIONS = {
    ".txt": TEXT_PLAIN,
    ".text": TEXT_PLAIN,
    ".md": TEXT_MARKDOWN,
    ".markdown": TEXT_MARKDOWN,
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".pdf": APPLICATION_PDF,
    ".docx": DOCX,
    ".pptx": PPTX,
}
_ALIASES = {
    "text/x-markdown": TEXT_MARKDOWN,
    "application/xhtml+xml": TEXT_HTML,
    "application/x-pdf": APPLICATION_PDF,
}

# PDF readers accept the header anywhere in the first KiB.
_PDF_HEADER_WINDOW = 1024
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")
# Office files are zip archives; the local header of each entry carries its name,
# and writers put the main part among the first few entries.
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc/.ppt, and encrypted .docx/.pptx
_OFFICE_MARKERS = ((b"word/document.xml", DOCX), (b"ppt/presentation.xml", PPTX))
_OFFICE_FOLDERS = ((b"word/", DOCX), (b"ppt/", PPTX))


def split_mime(mime_type: str) -> tuple[str, str | None]:
    """``Text/HTML; charset=latin-1`` -> (``text/html``, ``iso8859-1``)."""
    main, *params = (part.strip() for part in mime_type.split(";"))
    main = _ALIASES.get(main.lower(), main.lower())
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = encoding.canonical(value.strip().strip('"'))
    return main, charset


def normalize_mime(mime_type: str) -> str:
    """``Text/HTML; charset=UTF-8`` -> ``text/html``; InvalidInput when unsupported."""
    main, _charset = split_mime(mime_type)
    if main not in SUPPORTED_MIME_TYPES:
        raise InvalidInput(f"unsupported MIME type {main[:100]!r}")
    return main


def _looks_like_html(head: bytes) -> bool:
    start = head.removeprefix(codecs.BOM_UTF8).lstrip()[:256].lower()
    if start.startswith(b"<?xml"):
        return b"<html" in head[:_PDF_HEADER_WINDOW].lower()
    return start.startswith(_HTML_STARTS)


def _office_type(head: bytes) -> str | None:
    if not head.startswith(_ZIP_MAGIC):
        return None
    for markers in (_OFFICE_MARKERS, _OFFICE_FOLDERS):
        found = {mime for marker, mime in markers if marker in head}
        if len(found) == 1:
            return found.pop()
    return None


def _check_text(head: bytes) -> None:
    """Raise InvalidInput saying why ``head`` is not the start of a text document."""
    chosen = encoding.choose(head, complete=False)
    # Not final: the head may end in the middle of a multi-byte character.
    decoder = codecs.getincrementaldecoder(chosen.name)("replace")
    if control_heavy(decoder.decode(head[chosen.bom :], False)):
        raise binary_error()


def detect_mime(filename: str, head: bytes) -> str:
    """The MIME type of a document from its name and first bytes (≥ 4 KiB advised).

    A PDF header or an Office archive's main part wins over any name; a text
    extension decides between plain text, Markdown and HTML; an unknown extension
    is sniffed for HTML, then accepted as plain text when the bytes decode as text
    in some encoding. Raises InvalidInput saying what the bytes look like otherwise.
    """
    ext = os.path.splitext(filename)[1].lower()
    by_name = _EXTENSIONS.get(ext)
    if head.startswith(b"%PDF-"):
        return APPLICATION_PDF
    if office := _office_type(head):
        return office
    if by_name == APPLICATION_PDF:
        if b"%PDF-" in head[:_PDF_HEADER_WINDOW]:
            return APPLICATION_PDF
        raise InvalidInput("file is named .pdf but has no PDF header")
    if by_name in (DOCX, PPTX):
        kind = ext[1:].upper()
        if head.startswith(_OLE_MAGIC):
            raise InvalidInput(f"{kind} is encrypted or in the old binary Office format")
        if head.startswith(_ZIP_MAGIC):
            return by_name  # the main part is further in; the parser checks for it
        raise InvalidInput(f"file is named {ext} but is not a zip archive")
    if by_name is not None:
        _check_text(head)
        return by_name
    if _looks_like_html(head):
        return TEXT_HTML
    if head.startswith((_ZIP_MAGIC, _OLE_MAGIC)):
        raise InvalidInput(
            f"unsupported binary {_kind(ext)}file: an archive that is neither DOCX nor PPTX"
        )
    try:
        _check_text(head)
    except InvalidInput as exc:
        raise InvalidInput(
            f"unsupported binary {_kind(ext)}file ({exc.message}): "
            "only text, Markdown, HTML, PDF, DOCX and PPTX"
        ) from None
    return TEXT_PLAIN


def _kind(ext: str) -> str:
    return f"'{ext[:20]}' " if ext else ""
