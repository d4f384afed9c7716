"""PPTX (PowerPoint 2007+): the text of each slide in presentation order, streamed with lxml.

A slide's title placeholder becomes a ``#`` heading; other text frames become
paragraphs and tables a row a line. Speaker notes, masters and layouts (their
placeholder prompts) are left out.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any, BinaryIO

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.office_text import TextWriter
from ingestd.shared.parsers.office_zip import Package, release

P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
PRESENTATION = "ppt/presentation.xml"
PRESENTATION_RELS = "ppt/_rels/presentation.xml.rels"
_SLIDE_TYPE = "/slide"
_TITLES = frozenset({"title", "ctrTitle"})
_TAGS = (P + "sp", P + "ph", A + "p", A + "tbl", A + "tr", A + "tc")


def slide_parts(package: Package) -> list[str]:
    """The slides' part names, in the order the presentation shows them."""
    package.check([PRESENTATION, PRESENTATION_RELS])
    targets: dict[str, str] = {}
    for _event, rel in package.iterparse(PRESENTATION_RELS, tag=RELS + "Relationship"):
        if (rel.get("Type") or "").endswith(_SLIDE_TYPE) and rel.get("TargetMode") != "External":
            target = rel.get("Target") or ""
            if target.startswith("/"):
                targets[rel.get("Id") or ""] = target[1:]
            else:
                targets[rel.get("Id") or ""] = posixpath.normpath(posixpath.join("ppt", target))
        release(rel)
    order = []
    for _event, slide in package.iterparse(PRESENTATION, tag=P + "sldId"):
        rid = slide.get(R + "id") or ""
        if rid not in targets:
            raise InvalidInput(f"PPTX is corrupt: slide relationship {rid[:40]!r} not found")
        order.append(targets[rid])
        release(slide)
    return order


def _text(p: Any) -> str:
    parts = []
    for element in p.iter(A + "t", A + "br"):
        parts.append("\n" if element.tag == A + "br" else element.text or "")
    return "".join(parts)


def _slide(package: Package, name: str, out: TextWriter) -> Iterator[str]:
    title = False
    for event, element in package.iterparse(name, events=("start", "end"), tag=_TAGS):
        tag = element.tag
        if event == "start":
            if tag == A + "tbl":
                out.table_start()
            elif tag == A + "tr":
                out.row_start()
            elif tag == A + "tc":
                out.cell_start()
            continue
        if tag == P + "ph":
            # The placeholder's kind comes before the shape's text.
            title = title or element.get("type") in _TITLES
            continue
        if tag == A + "p":
            out.paragraph(_text(element), "# " if title else "")
        elif tag == A + "tc":
            out.cell_end()
        elif tag == A + "tr":
            out.row_end()
        elif tag == A + "tbl":
            out.table_end()
        elif tag == P + "sp":
            title = False
        release(element)
        yield from out.full_blocks()


def iter_pptx_blocks(stream: BinaryIO, *, block_chars: int) -> Iterator[str]:
    check_block_chars(block_chars)
    package = Package(stream, "PPTX")
    try:
        if not package.has(PRESENTATION):
            raise InvalidInput(f"PPTX is missing its part {PRESENTATION!r} (not a presentation?)")
        slides = slide_parts(package)
        package.check(slides)
        out = TextWriter(block_chars)
        for name in slides:
            yield from _slide(package, name, out)
        if not out.has_text:
            raise InvalidInput("document is empty (PPTX has no text)")
        yield from out.rest()
    finally:
        package.close()
