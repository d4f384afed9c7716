"""text/plain and text/markdown: decoded (any common encoding), passed through as-is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.decode import DecodedText, TextBlocks, empty_error


def _blocks(decoded: DecodedText) -> Iterator[str]:
    has_content = False
    for text in decoded:
        if not has_content and not text.isspace():
            has_content = True
        yield text
    if not has_content:
        raise empty_error()


def iter_text_blocks(
    stream: BinaryIO, *, block_chars: int, charset: str | None = None
) -> TextBlocks:
    check_block_chars(block_chars)
    decoded = DecodedText(stream, block_chars, declared=charset)
    return TextBlocks(decoded, _blocks(decoded))
