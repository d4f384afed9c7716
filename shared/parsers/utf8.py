"""Streaming, strict UTF-8 decoding of a document's bytes.

Text documents are decoded piece by piece, so a 50 MB single-line file never
becomes one 50 MB string. Errors carry byte offsets, never document text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.errors import InvalidInput

_BOM = "\ufeff"

# Control characters that do not occur in real text. Tab, newlines, form feed,
# vertical tab and ESC (ANSI colours in logs) are deliberately allowed.
_BINARY_CONTROLS = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")

# A few stray control characters are tolerated; a document where more than one
# character in ten is one is binary data that happens to be valid UTF-8.
_CONTROL_RATIO_LIMIT = 0.10
_CONTROL_MIN_COUNT = 8


def binary_error() -> InvalidInput:
    return InvalidInput("binary content in a text document")


def empty_error() -> InvalidInput:
    return InvalidInput("document is empty")


def decode_utf8(stream: BinaryIO, read_size: int) -> Iterator[str]:
    """Yield the stream's text in pieces of at most ``read_size`` characters.

    Line endings are normalised to ``\\n`` and a leading byte-order mark is
    dropped. Raises InvalidInput on invalid UTF-8 (with the byte offset), on NUL
    bytes or on mostly-control-character content.
    """
    if read_size < 2:
        raise ValueError("read_size must be at least 2")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0  # bytes handed to the decoder so far
    chars = 0
    controls = 0
    first = True
    carry_cr = False
    while True:
        # One byte less than the budget leaves room for a carried-over '\r'.
        raw = stream.read(read_size - 1)
        final = not raw
        if fed == 0 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InvalidInput("text is UTF-16 encoded; only UTF-8 is supported")
        if b"\x00" in raw:
            raise binary_error()
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(raw, final)
        except UnicodeDecodeError as exc:
            offset = fed - pending + exc.start
            raise InvalidInput(f"not valid UTF-8 at byte offset {offset}") from None
        fed += len(raw)
        if first and text:
            first = False
            if text.startswith(_BOM):
                text = text[1:]
        if carry_cr:
            text = "\r" + text
            carry_cr = False
        if not final and text.endswith("\r"):
            # Keep a trailing '\r' until we know whether '\n' follows it.
            text = text[:-1]
            carry_cr = True
        if text:
            chars += len(text)
            controls += len(_BINARY_CONTROLS.findall(text))
            if controls >= _CONTROL_MIN_COUNT and controls > _CONTROL_RATIO_LIMIT * chars:
                raise binary_error()
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            yield text
        if final:
            return
