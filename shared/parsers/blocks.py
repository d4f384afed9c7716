"""Bounded text blocks: the unit every parser yields."""

from __future__ import annotations

from collections.abc import Iterator

MIN_BLOCK_CHARS = 16


def check_block_chars(block_chars: int) -> None:
    if block_chars < MIN_BLOCK_CHARS:
        raise ValueError(f"block_chars must be at least {MIN_BLOCK_CHARS}, got {block_chars}")


def split_bounded(text: str, block_chars: int) -> Iterator[str]:
    """``text`` in consecutive slices of at most ``block_chars`` characters."""
    for start in range(0, len(text), block_chars):
        yield text[start : start + block_chars]


class BlockBuffer:
    """Collects many small writes and hands them out as blocks of ``block_chars``.

    Parsers such as the HTML one produce text in tiny pieces; joining them per
    block keeps the consumer's per-block overhead low and memory bounded.
    """

    def __init__(self, block_chars: int) -> None:
        check_block_chars(block_chars)
        self._block_chars = block_chars
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        if text:
            self._parts.append(text)
            self._size += len(text)

    def full_blocks(self) -> Iterator[str]:
        """Every complete block collected so far; the remainder stays buffered."""
        if self._size < self._block_chars:
            return
        text = "".join(self._parts)
        whole = len(text) - len(text) % self._block_chars
        rest = text[whole:]
        self._parts = [rest] if rest else []
        self._size = len(rest)
        yield from split_bounded(text[:whole], self._block_chars)

    def rest(self) -> Iterator[str]:
        """Whatever is left, at the end of the document."""
        text = "".join(self._parts)
        self._parts = []
        self._size = 0
        yield from split_bounded(text, self._block_chars)
