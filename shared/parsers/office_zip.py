"""The zip archive inside a DOCX or PPTX, opened only after its directory passed ``limits``.

The end-of-central-directory record is read first (22 bytes near the end), so an
archive claiming millions of entries is refused before zipfile builds an object
for each. The parts the parser will read are then checked against the size and
ratio ceilings as declared by the directory, which zipfile enforces while
inflating (an entry that inflates past its declared size fails its CRC check).
XML is parsed incrementally by lxml with entities left unexpanded and libxml2's
default depth and text-node limits, so no element tree is ever whole in memory.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, BinaryIO

from lxml import etree

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import limits

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_ENCRYPTED_FLAG = 0x1

# What reading a damaged archive or its XML raises; I/O errors of the stream are not
# among them and propagate as themselves.
CORRUPT = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,  # a compression method zipfile lacks
    etree.XMLSyntaxError,
    struct.error,
)


def _read_exact(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    parts = []
    while size > 0:
        data = stream.read(size)
        if not data:
            break
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def directory_size(stream: BinaryIO, kind: str) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-central-directory record."""
    end = stream.seek(0, 2)
    tail_at = max(end - _EOCD_SIZE - _MAX_COMMENT, 0)
    tail = _read_exact(stream, tail_at, end - tail_at)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise InvalidInput(f"{kind} is not a zip archive (no central directory)")
    entries, size = struct.unpack_from("<HI", tail, at + 10)
    if entries == 0xFFFF or size == 0xFFFFFFFF:
        locator = _read_exact(stream, tail_at + at - 20, 20)
        if len(locator) < 20 or not locator.startswith(_ZIP64_LOCATOR):
            raise InvalidInput(f"{kind} is corrupt: zip64 directory locator missing")
        (record_at,) = struct.unpack_from("<Q", locator, 8)
        record = _read_exact(stream, record_at, 56)
        if len(record) < 56 or not record.startswith(_ZIP64_EOCD):
            raise InvalidInput(f"{kind} is corrupt: zip64 directory record missing")
        entries, size = struct.unpack_from("<QQ", record, 32)
    return entries, size


class Package:
    """An Office zip archive whose reads are accounted against ``limits``."""

    def __init__(self, stream: BinaryIO, kind: str) -> None:
        self.kind = kind
        entries, size = directory_size(stream, kind)
        if entries > limits.MAX_ZIP_ENTRIES:
            raise InvalidInput(
                f"{kind} has {entries} zip entries; the limit is {limits.MAX_ZIP_ENTRIES}"
            )
        if size > limits.MAX_ZIP_DIRECTORY_BYTES:
            raise InvalidInput(
                f"{kind} has a {size}-byte zip directory; "
                f"the limit is {limits.MAX_ZIP_DIRECTORY_BYTES}"
            )
        stream.seek(0)
        try:
            self._zip = zipfile.ZipFile(stream)  # type: ignore[arg-type]
        except CORRUPT as exc:
            raise InvalidInput(f"{kind} is not a valid zip archive: {str(exc)[:200]}") from None
        self._checked: set[str] = set()
        self._xml_bytes = 0

    def close(self) -> None:
        self._zip.close()

    def has(self, name: str) -> bool:
        try:
            self._zip.getinfo(name)
        except KeyError:
            return False
        return True

    def check(self, names: Iterable[str]) -> None:
        """Refuse the document if reading ``names`` would pass a ceiling; call it for
        every part before the work on any of them starts."""
        for name in names:
            if name in self._checked:
                continue
            try:
                info = self._zip.getinfo(name)
            except KeyError:
                raise InvalidInput(f"{self.kind} is missing its part {name[:100]!r}") from None
            if info.flag_bits & _ENCRYPTED_FLAG:
                raise InvalidInput(f"{self.kind} is encrypted")
            size = info.file_size
            if size > limits.MIN_RATIO_CHECK_BYTES and (
                size > limits.MAX_ZIP_RATIO * max(info.compress_size, 1)
            ):
                ratio = size // max(info.compress_size, 1)
                raise InvalidInput(
                    f"{self.kind} part {name[:100]!r} inflates {ratio}:1 to {size} bytes; "
                    f"the ratio limit is {limits.MAX_ZIP_RATIO}:1"
                )
            self._xml_bytes += size
            if self._xml_bytes > limits.MAX_OFFICE_XML_BYTES:
                raise InvalidInput(
                    f"{self.kind} holds over {self._xml_bytes} bytes of XML; "
                    f"the limit is {limits.MAX_OFFICE_XML_BYTES}"
                )
            self._checked.add(name)

    def iterparse(self, name: str, **kw: Any) -> Iterator[tuple[str, Any]]:
        """lxml's iterparse over a checked part, damage reported as InvalidInput."""
        if name not in self._checked:
            raise RuntimeError(f"part {name!r} read before it was checked against the limits")
        try:
            with self._zip.open(name) as part:
                yield from _iterparse(part, **kw)
        except CORRUPT as exc:
            raise InvalidInput(f"{self.kind} is corrupt: {name[:100]}: {str(exc)[:200]}") from None


def _iterparse(part: IO[bytes], **kw: Any) -> Iterator[tuple[str, Any]]:
    return etree.iterparse(  # type: ignore[no-any-return]
        part, resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False, **kw
    )


def release(element: Any) -> None:
    """Free a processed element and the processed siblings before it, so the tree
    iterparse builds never holds more than the open elements."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
