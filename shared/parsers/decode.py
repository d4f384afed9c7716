"""Streaming, strict decoding of a text document's bytes, in whatever encoding they are.

Text documents are decoded piece by piece, so a 50 MB single-line file never
becomes one 50 MB string. The encoding is chosen once, before the first piece
(``encoding.choose``); a byte that does not fit it later fails the document with
its offset. Errors carry byte offsets, never document text.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import encoding
from ingestd.shared.parsers.blocks import split_bounded

# What the encoding is chosen from, and then decoded first.
SNIFF_BYTES = 64 * 1024
# A document whose first 64 KiB are ASCII may still be Latin-1 further on: a seekable
# stream is read through (in pieces of this size) to confirm UTF-8 before any text
# leaves, and charset detection then looks at the bytes around the first non-UTF-8 one.
# Small pieces: each non-ASCII one is decoded into a throwaway string.
SCAN_BYTES = 64 * 1024
SAMPLE_BEFORE = 16 * 1024
SAMPLE_AFTER = 48 * 1024

_WIDE = frozenset({"utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"})
_BOM = "\ufeff"

# Control characters that do not occur in real text. Tab, newlines, form feed,
# vertical tab and ESC (ANSI colours in logs) are deliberately allowed.
_BINARY_CONTROLS = re.compile("[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")

# A few stray control characters are tolerated; a document where more than one
# character in ten is one is binary data that happens to decode.
_CONTROL_RATIO_LIMIT = 0.10
_CONTROL_MIN_COUNT = 8


def binary_error() -> InvalidInput:
    return InvalidInput("looks binary: more than 1 character in 10 is a control character")


def empty_error() -> InvalidInput:
    return InvalidInput("document is empty")


def control_heavy(text: str) -> bool:
    controls = len(_BINARY_CONTROLS.findall(text))
    return controls >= _CONTROL_MIN_COUNT and controls > _CONTROL_RATIO_LIMIT * len(text)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    parts = []
    got = 0
    while got < size:
        data = stream.read(size - got)
        if not data:
            break
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _seekable(stream: BinaryIO) -> bool:
    check = getattr(stream, "seekable", None)
    return callable(check) and bool(check())


def _first_non_utf8(stream: BinaryIO, head: bytes) -> int | None:
    """Offset of the first byte that is not UTF-8 in a document whose first bytes,
    ``head``, were valid and whose rest ``stream`` holds; it is read through in
    bounded pieces and left where it was. Raises InvalidInput when the document is
    UTF-8 with a corrupt byte (``encoding.corrupt_utf8``) rather than another encoding."""
    here = stream.tell()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    decoder.decode(head, False)  # an unfinished last character carries over
    multibyte = not head.isascii()
    fed = len(head)
    try:
        while True:
            raw = stream.read(SCAN_BYTES)
            if raw.isascii() and not decoder.getstate()[0]:
                if not raw:
                    return None
                fed += len(raw)
                continue
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(raw, not raw)
            except UnicodeDecodeError as exc:
                bad = fed - pending + exc.start
                if not raw or not raw[: max(exc.start - pending, 0)].isascii() or multibyte:
                    raise encoding.not_utf8(bad) from None
                return bad
            if not raw:
                return None
            multibyte = True  # this piece was not ASCII, and it decoded
            fed += len(raw)
    finally:
        stream.seek(here)


def _sample_around(stream: BinaryIO, start: int, offset: int) -> bytes:
    here = stream.tell()
    try:
        stream.seek(start + max(offset - SAMPLE_BEFORE, 0))
        return _read_up_to(stream, SAMPLE_BEFORE + SAMPLE_AFTER)
    finally:
        stream.seek(here)


class DecodedText:
    """The stream's text in pieces of at most ``read_size`` characters.

    ``encoding`` is set before the first piece is returned. Line endings are
    normalised to ``\\n`` and a byte-order mark is dropped. Raises InvalidInput on
    bytes the encoding cannot decode (with the byte offset), on NUL bytes in a
    text that is not UTF-16/32, and on mostly-control-character content.
    """

    def __init__(self, stream: BinaryIO, read_size: int, *, declared: str | None = None) -> None:
        if read_size < 2:
            raise ValueError("read_size must be at least 2")
        self.encoding: encoding.Encoding | None = None
        self._pieces = self._decode(stream, read_size, declared)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def _choose(self, stream: BinaryIO, head: bytes, declared: str | None) -> encoding.Encoding:
        complete = len(head) < SNIFF_BYTES
        chosen = encoding.choose(head, complete=complete, declared=declared)
        if chosen.how != "utf-8" or complete or not _seekable(stream):
            return chosen
        start = stream.tell() - len(head)
        bad = _first_non_utf8(stream, head)
        if bad is None:
            return chosen
        name = encoding.detect(head[:SAMPLE_BEFORE] + _sample_around(stream, start, bad))
        if name is None:
            raise encoding.no_encoding_fits()
        return encoding.Encoding(name, 0, "detected")

    def _decode(self, stream: BinaryIO, read_size: int, declared: str | None) -> Iterator[str]:
        head = _read_up_to(stream, SNIFF_BYTES)
        enc = self._choose(stream, head, declared)
        self.encoding = enc
        wide = enc.name in _WIDE
        label = "UTF-8" if enc.name == "utf-8" else enc.name
        decoder = codecs.getincrementaldecoder(enc.name)("strict")
        step = read_size - 1  # one less than the budget leaves room for a carried-over '\r'
        fed = enc.bom  # bytes handed to the decoder so far
        head_at = enc.bom
        chars = 0
        controls = 0
        first = True
        carry_cr = False
        while True:
            if head_at < len(head):
                raw = head[head_at : head_at + step]
                head_at += len(raw)
                if head_at >= len(head):
                    head = b""  # decoded: not kept for the rest of the document
            else:
                raw = stream.read(step)
            final = not raw
            if not wide and b"\x00" in raw:
                raise encoding.looks_binary(fed + raw.index(b"\x00"))
            state = decoder.getstate()
            pending = len(state[0]) if isinstance(state, tuple) else 0
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as exc:
                offset = fed - pending + exc.start
                raise InvalidInput(f"not valid {label} at byte offset {offset}") from None
            fed += len(raw)
            if wide and "\x00" in text:
                where = chars + text.index("\x00")
                raise InvalidInput(f"looks binary: NUL character at character {where}")
            if first and text:
                first = False
                text = text.removeprefix(_BOM)
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
                yield from split_bounded(text, read_size)
            if final:
                return


class TextBlocks:
    """A text parser's blocks, telling the encoding they were decoded from: the
    parse stage records it once the blocks are consumed."""

    def __init__(self, decoded: DecodedText, blocks: Iterator[str]) -> None:
        self._decoded = decoded
        self._blocks = blocks

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._blocks)

    @property
    def encoding(self) -> str | None:
        found = self._decoded.encoding
        return None if found is None else found.name
