"""DOCX and PPTX documents for tests: real ones written by python-docx/python-pptx, and
large or hostile ones written part by part (streamed into the zip, never whole)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from docx import Document
from pptx import Presentation
from pptx.util import Inches

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" ContentType="application/'
    'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
)

# What sample_docx() holds, as the parser writes it.
SAMPLE_DOCX_TEXT = (
    "# Quarterly report\n\n"
    "# Revenue\n\n"
    "Sales grew in every region, café owners included.\n\n"
    "- first point\n\n"
    "- second point\n\n"
    "## Details by region\n\n"
    "Region | Q1 | Q2\n"
    "North | 10 | 12\n"
    "South | 7 | 9\n\n"
    "Closing remarks after the table."
)

SAMPLE_PPTX_TEXT = (
    "# Launch plan\n\n"
    "Ship the parser\n\n"
    "Measure its memory\n\n"
    "# Numbers\n\n"
    "Metric | Value\n"
    "Docs | 705"
)


def sample_docx() -> bytes:
    doc = Document()
    doc.add_heading("Quarterly report", 0)
    doc.add_heading("Revenue", level=1)
    doc.add_paragraph("Sales grew in every region, café owners included.")
    doc.add_paragraph("first point", style="List Bullet")
    doc.add_paragraph("second point", style="List Bullet")
    doc.add_heading("Details by region", level=2)
    rows = [("Region", "Q1", "Q2"), ("North", "10", "12"), ("South", "7", "9")]
    table = doc.add_table(rows=len(rows), cols=3)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    doc.add_paragraph("Closing remarks after the table.")
    doc.sections[0].header.paragraphs[0].text = "header text is left out"
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def sample_pptx() -> bytes:
    deck = Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Launch plan"
    first.placeholders[1].text = "Ship the parser\nMeasure its memory"
    first.notes_slide.notes_text_frame.text = "speaker notes are left out"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Numbers"
    shape = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1.5))
    for r, row in enumerate([("Metric", "Value"), ("Docs", "705")]):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


def write_docx_parts(path: Path, parts: Iterable[tuple[str, Iterable[bytes]]]) -> Path:
    """A zip of the named parts, each streamed from its pieces."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, pieces in parts:
            with zf.open(name, "w", force_zip64=True) as fh:
                for piece in pieces:
                    fh.write(piece)
    return path


def _body(paragraphs: int, words: int) -> Iterable[bytes]:
    yield f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{W_NS}"><w:body>'.encode()
    for i in range(paragraphs):
        text = " ".join(f"word{(i * 31 + j) % 997}" for j in range(words))
        yield f"<w:p><w:r><w:t>Paragraph {i}: {text}</w:t></w:r></w:p>".encode()
    yield b"</w:body></w:document>"


def large_docx(path: Path, paragraphs: int, words: int = 40) -> Path:
    """A DOCX (python-docx's template) whose word/document.xml holds ``paragraphs``
    paragraphs of ``words`` words."""
    with zipfile.ZipFile(io.BytesIO(sample_docx())) as template:
        kept = [
            (info.filename, [template.read(info)])
            for info in template.infolist()
            if info.filename != "word/document.xml"
        ]
    return write_docx_parts(path, [*kept, ("word/document.xml", _body(paragraphs, words))])


def docx_bomb(path: Path, inflated: int) -> Path:
    """A DOCX whose word/document.xml inflates to ``inflated`` bytes of one repeated
    paragraph (~1000:1): what a zip bomb looks like in the directory."""
    piece = b"<w:p><w:r><w:t>" + b"a" * 65_000 + b"</w:t></w:r></w:p>"
    head = f'<?xml version="1.0"?><w:document xmlns:w="{W_NS}"><w:body>'.encode()

    def pieces() -> Iterable[bytes]:
        yield head
        for _ in range(inflated // len(piece)):
            yield piece
        yield b"</w:body></w:document>"

    return write_docx_parts(
        path, [("[Content_Types].xml", [_DOCX_TYPES.encode()]), ("word/document.xml", pieces())]
    )


def many_entries_docx(path: Path, entries: int) -> Path:
    return write_docx_parts(
        path,
        [("word/document.xml", _body(1, 3))]
        + [(f"word/media/image{i}.bin", [b""]) for i in range(entries)],
    )
