"""Paragraphs and tables of Office XML -> the Markdown-like text the other parsers yield.

Shared by DOCX and PPTX: paragraphs are separated by a blank line, headings carry
``#`` marks (as the HTML parser writes them), list items ``- ``, and a table is
written a row a line with `` | `` between cells (as the HTML parser writes ``<td>``).
"""

from __future__ import annotations

from collections.abc import Iterator

from ingestd.shared.parsers.blocks import BlockBuffer


class _Table:
    def __init__(self) -> None:
        self.cells: list[str] = []
        self.cell: list[str] = []
        self.rows = 0


class TextWriter:
    """Collects paragraphs and table rows into bounded blocks."""

    def __init__(self, block_chars: int) -> None:
        self._out = BlockBuffer(block_chars)
        self._tables: list[_Table] = []
        self._started = False
        self.has_text = False

    def paragraph(self, text: str, prefix: str = "") -> None:
        if not text or text.isspace():
            return
        if self._tables:
            self._tables[-1].cell.append(text.strip())
            return
        if prefix.startswith("#"):
            text = " ".join(text.split())  # a heading stays on one line
        self._write("\n\n", prefix + text)

    def table_start(self) -> None:
        self._tables.append(_Table())

    def cell_start(self) -> None:
        if not self._tables:  # malformed: a cell or row outside any table
            return
        self._tables[-1].cell = []

    def cell_end(self) -> None:
        if not self._tables:  # malformed: a cell or row outside any table
            return
        table = self._tables[-1]
        table.cells.append(" ".join(table.cell).replace("\n", " "))
        table.cell = []

    def row_start(self) -> None:
        if not self._tables:  # malformed: a cell or row outside any table
            return
        self._tables[-1].cells = []

    def row_end(self) -> None:
        if not self._tables:  # malformed: a cell or row outside any table
            return
        table = self._tables[-1]
        cells = table.cells
        table.cells = []
        if not any(c and not c.isspace() for c in cells):
            return
        line = " | ".join(cells)
        if len(self._tables) > 1:
            # A nested table becomes text of the cell that holds it.
            self._tables[-2].cell.append(line)
            return
        self._write("\n" if table.rows else "\n\n", line)
        table.rows += 1

    def table_end(self) -> None:
        if not self._tables:  # malformed: a cell or row outside any table
            return
        self._tables.pop()

    def _write(self, separator: str, text: str) -> None:
        if self._started:
            self._out.write(separator)
        self._out.write(text)
        self._started = True
        self.has_text = True

    def full_blocks(self) -> Iterator[str]:
        return self._out.full_blocks()

    def rest(self) -> Iterator[str]:
        return self._out.rest()
