"""application/pdf: the text layer, page by page, with PDFium (pypdfium2).

The document is opened through PDFium's custom file access, which asks for
byte ranges as it needs them, so a large object in PostgreSQL is never read
whole into memory. OCR is not done here (that is the llamaparse parser's job).
A document past a ceiling of ``limits`` (pages, characters on a page) is refused
before that work is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import limits
from ingestd.shared.parsers.blocks import check_block_chars, split_bounded
from ingestd.shared.parsers.progress import Consumed, Progress, ignore

_PAGE_SEPARATOR = "\n\n"

# PDFium marks a hyphen it generated at a line break with 0x02; other controls
# and noncharacters are extraction noise.
_CLEANUP: dict[int, str | None] = {0x02: "-", 0xFFFE: None, 0xFFFF: None}
_CLEANUP.update({c: None for c in range(0x00, 0x20) if c not in (0x02, 0x09, 0x0A)})


class _RangeReader:
    """What PDFium's stream callback needs (seek/tell/read/readinto) over a
    stream that may only offer ``read(n)``, ``seek`` and ``tell``.

    PDFium calls ``readinto`` from a C callback, where an exception could only
    be printed; it is kept instead and re-raised by :meth:`raise_error` so that
    an I/O failure is reported as itself, not as a corrupt PDF.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.error: BaseException | None = None

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._stream.seek(offset, whence)
        except Exception as exc:
            self._keep(exc)
            return 0

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: Any) -> int:
        if self.error is not None:
            return 0
        view = memoryview(buffer).cast("B")
        filled = 0
        try:
            while filled < len(view):
                data = self._stream.read(len(view) - filled)
                if not data:
                    break
                view[filled : filled + len(data)] = data
                filled += len(data)
        except Exception as exc:
            self._keep(exc)
            return 0
        return filled

    def _keep(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _load_error(exc: pdfium.PdfiumError) -> InvalidInput:
    code = exc.err_code
    if code == pdfium_c.FPDF_ERR_PASSWORD:
        return InvalidInput("PDF is encrypted")
    if code == pdfium_c.FPDF_ERR_SECURITY:
        return InvalidInput("PDF is encrypted (unsupported security handler)")
    if code == pdfium_c.FPDF_ERR_SUCCESS:
        # PDFium opened it but found no pages.
        return InvalidInput("PDF has no pages")
    return InvalidInput(f"PDF is corrupt or unreadable: {exc}")


def _page_text(pdf: pdfium.PdfDocument, index: int) -> str:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
        try:
            chars = textpage.count_chars()
            if chars > limits.MAX_PDF_PAGE_CHARS:
                raise InvalidInput(
                    f"PDF page {index + 1} has {chars} characters of text; "
                    f"the limit is {limits.MAX_PDF_PAGE_CHARS}"
                )
            # Text PDFium cannot map to Unicode shows up as U+FFFD, visibly.
            text: str = textpage.get_text_range(errors="replace")
        finally:
            textpage.close()
    finally:
        page.close()
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CLEANUP)


REOPEN_EVERY_PAGES = 500


def _open(stream: BinaryIO) -> tuple[_RangeReader, pdfium.PdfDocument]:
    reader = _RangeReader(stream)
    try:
        pdf = pdfium.PdfDocument(reader)
    except pdfium.PdfiumError as exc:
        reader.raise_error()
        raise _load_error(exc) from None
    reader.raise_error()
    return reader, pdf


def iter_pdf_blocks(
    stream: BinaryIO, *, block_chars: int, progress: Progress = ignore
) -> Iterator[str]:
    """The text layer, page by page; ``progress`` hears of every page read, blank or
    not."""
    check_block_chars(block_chars)
    if not callable(getattr(stream, "seek", None)) or (
        callable(getattr(stream, "seekable", None)) and not stream.seekable()
    ):
        raise ValueError("PDF parsing needs a seekable stream")
    reader, pdf = _open(stream)
    try:
        if (pages := len(pdf)) > limits.MAX_PDF_PAGES:
            raise InvalidInput(f"PDF has {pages} pages; the limit is {limits.MAX_PDF_PAGES}")
        has_text = False
        for index in range(len(pdf)):
            if index and index % REOPEN_EVERY_PAGES == 0:
                # PDFium keeps ~4 KB per loaded page until the document is closed;
                # reopening bounds that for documents of tens of thousands of pages.
                pdf.close()
                reader, pdf = _open(stream)
            try:
                text = _page_text(pdf, index)
            except pdfium.PdfiumError as exc:
                reader.raise_error()
                raise InvalidInput(
                    f"PDF is corrupt or unreadable: page {index + 1}: {exc}"
                ) from None
            reader.raise_error()
            progress(Consumed("page", index + 1, pages))
            if text.isspace() or not text:
                continue
            if has_text:
                text = _PAGE_SEPARATOR + text
            has_text = True
            yield from split_bounded(text, block_chars)
        if not has_text:
            raise InvalidInput(
                f"PDF has no text layer: {pages:,} pages, 0 characters; OCR is not done "
                "here (the llamaparse parser does it)"
            )
    finally:
        pdf.close()
