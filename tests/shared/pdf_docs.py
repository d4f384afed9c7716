"""PDFs the tests generate (no binary fixtures)."""

from __future__ import annotations

import io

from pypdf import PdfWriter


def blank_pages(count: int) -> bytes:
    """``count`` empty pages: ~125 bytes a page, 20,000 pages in about a second."""
    writer = PdfWriter()
    for _ in range(count):
        writer.add_blank_page(612, 792)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
