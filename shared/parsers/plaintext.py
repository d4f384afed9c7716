"""text/plain and text/markdown: strict UTF-8, passed through as-is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.parsers.blocks import check_block_chars
from ingestd.shared.parsers.utf8 import decode_utf8, empty_error


def iter_text_blocks(stream: BinaryIO, *, block_chars: int) -> Iterator[str]:
    check_block_chars(block_chars)
    has_content = False
    for text in decode_utf8(stream, block_chars):
        if not has_content and not text.isspace():
            has_content = True
        yield text
    if not has_content:
        raise empty_error()
