"""text/html -> Markdown-like text, streamed through the stdlib HTMLParser.

The bytes are decoded as any text document is (``decode``); a ``<meta charset>``
is not read, detection decides.

Keeps what the chunker uses as structure: ``#`` headings, blank-line separated
paragraphs, ``- `` list items and fenced ``<pre>`` blocks. Drops scripts, styles
and the document head. Entities are decoded by HTMLParser (convert_charrefs).
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from typing import BinaryIO

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers.blocks import BlockBuffer
from ingestd.shared.parsers.decode import DecodedText, TextBlocks
from ingestd.shared.parsers.progress import Consumed, Progress, ignore

FEED_CHARS = 64 * 1024

# HTMLParser buffers an unterminated construct (a tag, a comment, a <script>
# body) until it ends; past this size the document is refused rather than
# letting one construct grow memory without bound.
MAX_PENDING_CHARS = 16 * 1024 * 1024

_SKIP = frozenset(
    {"script", "style", "head", "title", "noscript", "template", "svg", "math", "iframe"}
    | {"object", "canvas"}
)
_BLOCK = frozenset(
    {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "blockquote"}
    | {"table", "thead", "tbody", "tfoot", "dl", "figure", "figcaption", "form", "fieldset"}
    | {"address", "details", "summary", "hr", "caption", "center", "body", "html", "pre"}
    | {"h1", "h2", "h3", "h4", "h5", "h6"}
)
_LINE = frozenset({"br", "tr", "dt", "dd", "li"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}

# Pending separator strengths before the next text.
_NONE, _SPACE, _NEWLINE, _PARAGRAPH = 0, 1, 2, 3
_SEPARATORS = {_NONE: "", _SPACE: " ", _NEWLINE: "\n", _PARAGRAPH: "\n\n"}


class _MarkdownWriter(HTMLParser):
    def __init__(self, out: BlockBuffer) -> None:
        super().__init__(convert_charrefs=True)
        self._out = out
        self._skip: list[str] = []
        self._pending = _NONE
        self._prefix = ""  # heading or list marker, written with the next text
        self._started = False
        self._heading = 0
        self._pre = 0
        self._pre_fresh = False
        self._lists = 0
        self._cell = 0
        self.has_text = False

    # --- output -----------------------------------------------------------

    def _brk(self, level: int) -> None:
        if self._heading and level > _SPACE:
            # A heading must stay on one line.
            level = _SPACE
        self._pending = max(self._pending, level)

    def _emit(self, text: str) -> None:
        if self._started:
            self._out.write(_SEPARATORS[self._pending])
        self._out.write(self._prefix)
        self._out.write(text)
        self._started = True
        self._pending = _NONE
        self._prefix = ""

    # --- HTMLParser hooks ---------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # Tolerate a missing </head>: the body is never part of the head.
            self._skip = [t for t in self._skip if t not in ("head", "title")]
        if tag in _SKIP:
            self._skip.append(tag)
            return
        if self._skip:
            return
        if tag in _BLOCK:
            self._brk(_PARAGRAPH)
        elif tag in _LINE:
            self._brk(_NEWLINE)
        if tag in _HEADINGS:
            self._heading = _HEADINGS[tag]
            self._prefix = "#" * self._heading + " "
        elif tag in ("ul", "ol"):
            # A nested list continues its parent item instead of starting a paragraph.
            self._brk(_NEWLINE if self._lists else _PARAGRAPH)
            self._lists += 1
        elif tag == "li":
            self._prefix = "  " * max(self._lists - 1, 0) + "- "
        elif tag == "tr":
            self._cell = 0
        elif tag in ("td", "th"):
            if self._cell:
                self._brk(_SPACE)
                self._prefix = "| "
            self._cell += 1
        elif tag == "pre":
            self._pre += 1
            if self._pre == 1:
                self._emit("```")
                self._pending = _NEWLINE
                self._pre_fresh = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            if tag in self._skip:
                while self._skip.pop() != tag:
                    pass
            return
        if self._skip:
            return
        if tag in _HEADINGS:
            self._heading = 0
            self._prefix = ""
        elif tag in ("ul", "ol"):
            self._lists = max(self._lists - 1, 0)
            self._brk(_NEWLINE if self._lists else _PARAGRAPH)
        elif tag == "pre" and self._pre:
            self._pre -= 1
            if self._pre == 0:
                self._pending = _NEWLINE
                self._emit("```")
        if tag in _BLOCK:
            self._brk(_PARAGRAPH)
        elif tag in _LINE:
            self._brk(_NEWLINE)

    def handle_data(self, data: str) -> None:
        if self._skip or not data:
            return
        if self._pre:
            if self._pre_fresh:
                # Like browsers, ignore the newline right after <pre>.
                self._pre_fresh = False
                data = data.removeprefix("\n")
            if data:
                self._emit(data)
                self.has_text = self.has_text or not data.isspace()
            return
        words = data.split()
        if data[0].isspace():
            self._brk(_SPACE)
        if words:
            self._emit(" ".join(words))
            self.has_text = True
            if data[-1].isspace():
                self._brk(_SPACE)


def iter_html_blocks(
    stream: BinaryIO,
    *,
    block_chars: int,
    charset: str | None = None,
    progress: Progress = ignore,
) -> TextBlocks:
    """``progress`` hears of every slice fed to the parser: markup that yields no text
    for megabytes (nested ``<div>``s) is progress all the same."""
    decoded = DecodedText(stream, FEED_CHARS, declared=charset)
    return TextBlocks(decoded, _blocks(decoded, block_chars, progress))


def _blocks(decoded: DecodedText, block_chars: int, progress: Progress) -> Iterator[str]:
    out = BlockBuffer(block_chars)
    parser = _MarkdownWriter(out)
    fed = 0
    for text in decoded:
        parser.feed(text)
        fed += len(text)
        progress(Consumed("character", fed))
        if len(parser.rawdata) > MAX_PENDING_CHARS:
            raise InvalidInput(
                "HTML has an unterminated tag, comment or script longer than "
                f"{MAX_PENDING_CHARS} characters"
            )
        yield from out.full_blocks()
    parser.close()
    if not parser.has_text:
        raise InvalidInput("document is empty (no text outside markup)")
    yield from out.rest()
