"""Documents bigger inside than the parser's ceilings allow (issue 16): refused as
``invalid_input`` before the work, on the first attempt, saying which ceiling."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from ingestd.shared.errors import ErrorClass, InvalidInput
from ingestd.shared.parsers import APPLICATION_PDF, iter_blocks, limits
from ingestd.shared.parsers import pdf as pdf_module
from tests.shared.pdf_docs import blank_pages
from tests.workers.support import run_worker


def dense_page_pdf(lines: list[int]) -> bytes:
    """One page per entry, each with that many 1,000-character lines of tiny text,
    Flate-compressed: a few kilobytes that inflate to a million characters."""
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for count in lines:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        content = DecodedStreamObject()
        line = b"(" + b"x" * 1000 + b") Tj 0 -0.1 Td "
        content.set_data(b"BT /F1 0.1 Tf 1 790 Td " + line * count + b"ET")
        page[NameObject("/Contents")] = writer._add_object(content.flate_encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def parse_error(data: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        list(iter_blocks(io.BytesIO(data), APPLICATION_PDF))
    assert info.value.error_class is ErrorClass.INVALID_INPUT
    return info.value


@pytest.fixture
def pages_parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indexes of the pages whose text the parser extracted."""
    parsed: list[int] = []
    page_text = pdf_module._page_text

    def counting(pdf: Any, index: int) -> str:
        parsed.append(index)
        return page_text(pdf, index)

    monkeypatch.setattr(pdf_module, "_page_text", counting)
    return parsed


def test_too_many_pages_is_refused_before_any_page_is_parsed(
    monkeypatch: pytest.MonkeyPatch, pages_parsed: list[int]
) -> None:
    monkeypatch.setattr(limits, "MAX_PDF_PAGES", 5)
    assert parse_error(blank_pages(6)).message == "PDF has 6 pages; the limit is 5"
    assert pages_parsed == []


def test_a_pdf_at_the_page_ceiling_is_parsed(
    monkeypatch: pytest.MonkeyPatch, pages_parsed: list[int]
) -> None:
    monkeypatch.setattr(limits, "MAX_PDF_PAGES", 5)
    data = dense_page_pdf([1] * 5)
    assert "".join(iter_blocks(io.BytesIO(data), APPLICATION_PDF)).count("x") == 5000
    assert pages_parsed == [0, 1, 2, 3, 4]


def test_the_real_page_ceiling() -> None:
    assert limits.MAX_PDF_PAGES == 20_000
    error = parse_error(blank_pages(limits.MAX_PDF_PAGES + 1))
    assert error.message == "PDF has 20001 pages; the limit is 20000"


def test_a_page_with_too_much_text_is_refused_before_its_text_is_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_PDF_PAGE_CHARS", 2500)
    copied: list[int] = []
    get_text_range = pdf_module.pdfium.PdfTextPage.get_text_range

    def counting(self: Any, *args: Any, **kwargs: Any) -> str:
        text: str = get_text_range(self, *args, **kwargs)
        copied.append(len(text))
        return text

    monkeypatch.setattr(pdf_module.pdfium.PdfTextPage, "get_text_range", counting)
    error = parse_error(dense_page_pdf([2, 3]))
    # PDFium counts the line breaks it generates (CR LF) too: 3 x 1,000 + 2 x 2.
    assert error.message == "PDF page 2 has 3004 characters of text; the limit is 2500"
    assert len(copied) == 1  # page 1 only


def test_the_real_page_text_ceiling() -> None:
    data = dense_page_pdf([1, 1001])  # page 2: 1,001,000 + 2,000 (CR LF) from ~4 KB
    assert len(data) < 10_000
    error = parse_error(data)
    assert error.message == (
        f"PDF page 2 has 1003000 characters of text; the limit is {limits.MAX_PDF_PAGE_CHARS}"
    )


def test_a_pdf_over_its_ceiling_fails_on_its_first_attempt(
    conn: Any,
    db_url: str,
    make_settings: Callable[..., Any],
    ingest_bytes: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "MAX_PDF_PAGES", 3)
    doc = ingest_bytes(blank_pages(4), "many-pages.pdf", APPLICATION_PDF).document_id
    run_worker(make_settings(), db_url)
    row = conn.execute(
        "SELECT status, attempts, error_class, error_message FROM documents WHERE id = %s",
        (doc,),
    ).fetchone()
    assert (row["status"], row["attempts"], row["error_class"]) == ("failed", 1, "invalid_input")
    assert row["error_message"] == "PDF has 4 pages; the limit is 3"
