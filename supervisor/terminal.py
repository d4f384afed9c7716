"""What reaches the operator's terminal: outside text made inert, tables that fit.

Text from the outside world as a terminal may show it.

File names, error messages and chunk text come from documents and their senders. Printed
raw, an escape sequence in a file name retitles or clears the operator's terminal, and a
``[bold]`` in one is taken as rich markup. Every such value goes through here on its way
to a terminal (JSON output needs nothing: its encoder escapes control characters).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# C0 controls but tab and newline, DEL and the C1 controls (ESC's 8-bit forms).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` with each control character shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def markup_safe(value: object) -> str:
    """``printable``, and escaped for rich's markup."""
    return escape(printable(value))


# -- fitting tables to the terminal ---------------------------------------------

# The free-text column keeps at least this many cells before other columns are dropped.
WRAP_FLOOR = 16
# Between two columns: a cell of padding, the (blank) separator, a cell of padding.
COLUMN_GAP = 3


def _cell_width(markup: str) -> int:
    return max(cell_len(line) for line in Text.from_markup(markup).plain.split("\n"))


@dataclass(frozen=True)
class Col:
    """A column and its cells (already markup-safe). ``keep``: columns with the lowest
    are dropped first when the table does not fit. A ``wrap`` column (free text) wraps
    between words and folds a longer word; every other column shows its cells whole."""

    header: str
    cells: list[str]
    keep: int
    wrap: bool = False
    justify: Literal["left", "right"] = "left"


class FittedTable:
    """A table that drops its least important columns until the rest fit uncut.

    Narrow: rich would otherwise shrink every column and cut names with an ellipsis.
    ``wide``: every column, each at its full width, however wide the result."""

    def __init__(self, title: str, columns: list[Col], *, wide: bool, empty: str = "") -> None:
        self.title = title
        self.columns = columns
        self.wide = wide
        self.empty = empty  # said instead of a table without rows

    def _rows(self) -> int:
        return max((len(c.cells) for c in self.columns), default=0)

    def fitted(self, console: Console, options: ConsoleOptions) -> list[Col]:
        if self.wide:
            return list(self.columns)
        kept = list(self.columns)
        while len(kept) > 1 and self._min_width(kept) > options.max_width:
            kept.remove(min(kept, key=lambda c: c.keep))
        return kept

    @staticmethod
    def _min_width(cols: list[Col]) -> int:
        """Cells wide enough for every whole value (the free-text column at its floor),
        plus the padding and separator between columns (see ``_table``)."""
        widths = [
            WRAP_FLOOR if c.wrap else max(_cell_width(x) for x in [c.header, *c.cells])
            for c in cols
        ]
        return sum(widths) + COLUMN_GAP * (len(cols) - 1)

    def _table(self, cols: list[Col]) -> Table:
        table = Table(title=self.title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for c in cols:
            table.add_column(c.header, justify=c.justify, no_wrap=not c.wrap, overflow="fold")
        for i in range(self._rows()):
            table.add_row(*(c.cells[i] for c in cols))
        return table

    def _renderable(self, console: Console, options: ConsoleOptions) -> Table | Text:
        if self.empty and not self._rows():
            return Text(f"{self.title}: {self.empty}")
        return self._table(self.fitted(console, options))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        renderable = self._renderable(console, options)
        if self.wide:
            full = Measurement.get(console, options.update_width(10_000), renderable).maximum
            options = options.update_width(max(options.max_width, full))
        yield from console.render(renderable, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self._renderable(console, options))


class SideBySide:
    """Two renderables next to each other when both fit, else one above the other."""

    GAP = 4

    def __init__(self, left: RenderableType, right: RenderableType) -> None:
        self.left = left
        self.right = right

    def _parts(self) -> Iterator[RenderableType]:
        yield self.left
        yield self.right

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        needed = sum(Measurement.get(console, options, r).maximum for r in self._parts())
        if needed + self.GAP <= options.max_width:
            grid = Table.grid(padding=(0, self.GAP))
            grid.add_row(self.left, self.right)
            yield grid
        else:
            yield Group(*self._parts())


class OutputConsole(Console):
    """A console for a command's answer on stdout. rich answers a reader that went away
    (`ingestd status | head -1`) with ``SystemExit(1)``; this raises ``BrokenPipeError``
    instead, so the CLI ends the way it ends every command that loses its reader."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError
