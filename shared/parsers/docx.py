"""DOCX (Word 2007+): the body of ``word/document.xml``, streamed with lxml.

Headings are recognised by paragraph style (``Title``, ``Heading N`` or a style
with an outline level, resolved through ``word/styles.xml``), list paragraphs by
their numbering, tables a row a line. Headers, footers, comments, footnotes and
deleted revisions are left out; text boxes come out as paragraphs of their own.
python-docx is not used to read: it loads the whole XML tree (measured in
profiling/README.md), which would make memory grow with the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.office_text import TextWriter
from ingestd.shared.parsers.office_zip import Package, release

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
DOCUMENT = "word/document.xml"
STYLES = "word/styles.xml"

_HEADING_NAME = re.compile(r"heading ([1-9])")
_MAX_LEVEL = 6
# Run content that is text: the characters, and what Word draws for these elements.
_RUN_TEXT = {W + "t": None, W + "tab": "\t", W + "br": "\n", W + "cr": "\n"}
_RUN_TEXT[W + "noBreakHyphen"] = "-"
_RUN_TEXT[W + "softHyphen"] = ""


def _val(element: Any, path: str) -> str | None:
    found = element.find(path)
    return None if found is None else found.get(W + "val")


def _outline_level(element: Any) -> int | None:
    value = _val(element, f"{W}pPr/{W}outlineLvl")
    if value is None or not value.isdigit() or int(value) > 8:
        return None  # 9 means body text
    return min(int(value) + 1, _MAX_LEVEL)


def paragraph_styles(package: Package) -> dict[str, str]:
    """Paragraph style id -> the prefix its paragraphs get (``## `` for a level-2
    heading, ``- `` for a list style), from ``word/styles.xml``."""
    prefixes: dict[str, str] = {}
    if not package.has(STYLES):
        return prefixes
    for _event, style in package.iterparse(STYLES, tag=W + "style"):
        style_id = style.get(W + "styleId")
        name = (_val(style, W + "name") or "").lower()
        level: int | None = None
        if name == "title":
            level = 1
        elif match := _HEADING_NAME.fullmatch(name):
            level = min(int(match[1]), _MAX_LEVEL)
        else:
            level = _outline_level(style)
        if style_id and level:
            prefixes[style_id] = "#" * level + " "
        elif style_id and style.find(f"{W}pPr/{W}numPr") is not None:
            prefixes[style_id] = "- "
        release(style)
    return prefixes


def _paragraph(p: Any, styles: dict[str, str]) -> tuple[str, str]:
    """(prefix, text) of one ``w:p``; paragraphs nested in it were already written."""
    parts = []
    for element in p.iter(*_RUN_TEXT):
        if element.tag == W + "t":
            parts.append(element.text or "")
        elif element.getparent().tag == W + "r":  # not a tab stop or page setting
            parts.append(_RUN_TEXT[element.tag] or "")
    text = "".join(parts)
    props = p.find(W + "pPr")
    if props is None:
        return "", text
    if level := _outline_level(p):
        return "#" * level + " ", text
    if props.find(W + "numPr") is not None:
        depth = _val(props, f"{W}numPr/{W}ilvl") or "0"
        return "  " * min(int(depth) if depth.isdigit() else 0, 8) + "- ", text
    return styles.get(_val(props, W + "pStyle") or "", ""), text


def iter_docx_blocks(stream: BinaryIO, *, block_chars: int) -> Iterator[str]:
    check_block_chars(block_chars)
    package = Package(stream, "DOCX")
    try:
        if not package.has(DOCUMENT):
            raise InvalidInput(f"DOCX is missing its part {DOCUMENT!r} (not a Word document?)")
        package.check([DOCUMENT, *([STYLES] if package.has(STYLES) else [])])
        styles = paragraph_styles(package)
        out = TextWriter(block_chars)
        events = package.iterparse(
            DOCUMENT,
            events=("start", "end"),
            tag=(W + "p", W + "tbl", W + "tr", W + "tc"),
        )
        for event, element in events:
            tag = element.tag
            if event == "start":
                if tag == W + "tbl":
                    out.table_start()
                elif tag == W + "tr":
                    out.row_start()
                elif tag == W + "tc":
                    out.cell_start()
                continue
            if tag == W + "p":
                prefix, text = _paragraph(element, styles)
                out.paragraph(text, prefix)
            elif tag == W + "tc":
                out.cell_end()
            elif tag == W + "tr":
                out.row_end()
            else:
                out.table_end()
            release(element)
            yield from out.full_blocks()
        if not out.has_text:
            raise InvalidInput("document is empty (DOCX has no text)")
        yield from out.rest()
    finally:
        package.close()
