"""Which text encoding a document's bytes are in.

Order of evidence: a charset declared with the MIME type, then a byte-order mark
(UTF-8/16/32), then the NUL pattern of BOM-less UTF-16/32, then strict UTF-8, then
charset-normalizer's detection on a sample. Bytes that fit none of these fail
``invalid_input`` with a message that says what is wrong, never with document text.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from charset_normalizer import from_bytes

from ingestd.shared.errors import InvalidInput

# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# In BOM-less UTF-16 of Latin-script text every other byte is NUL; in binary data
# NULs fall anywhere. Share of the NUL-carrying byte positions that must be NUL,
# and most the others may be, for the bytes to be taken as UTF-16/32.
_WIDE_NUL_SHARE = 0.4
_WIDE_STRAY_SHARE = 0.02
# Fewer code units than this are too few to tell a pattern from chance.
_WIDE_MIN_UNITS = 4

# When several single-byte encodings decode a sample (nearly) equally well (the usual case
# for short Western text: 'déjà' is as plausible in cp1250 as in cp1252), take the
# one most documents are in. cp1252 comes before Latin-1 because it is a superset of
# Latin-1's printable characters (and what WHATWG decodes 'latin-1' labels as).
# Nearly as plausible counts as tied: on a short sample one unusual character (an
# '¿' or 'Æ') moves charset-normalizer's mess ratio by several hundredths.
_CHAOS_TOLERANCE = 0.1
_COHERENCE_TOLERANCE = 0.02
_TIE_PREFERENCE = ("cp1252", "iso8859-15", "iso8859-1", "cp1250", "cp1251", "koi8-r")


@dataclass(frozen=True)
class Encoding:
    name: str  # Python codec name, e.g. 'utf-8', 'utf-16-le', 'cp1252'
    bom: int  # bytes of byte-order mark to skip
    how: str  # 'declared', 'bom', 'nul-pattern', 'utf-8' or 'detected'


def canonical(name: str) -> str:
    """``Latin-1`` -> ``iso8859-1``; InvalidInput for a name Python has no codec for."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise InvalidInput(f"unknown charset {name[:40]!r}") from None


def looks_binary(offset: int) -> InvalidInput:
    return InvalidInput(f"looks binary: NUL bytes at offset {offset}")


def no_encoding_fits() -> InvalidInput:
    return InvalidInput("no text encoding fits: not UTF-8 and no other common encoding decodes it")


def from_bom(head: bytes) -> Encoding | None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return Encoding(name, len(bom), "bom")
    return None


def _decodes(data: bytes, name: str) -> bool:
    try:
        codecs.getincrementaldecoder(name)("strict").decode(data, False)
    except UnicodeDecodeError:
        return False
    return True


def _wide(head: bytes) -> str | None:
    """'utf-16-le' etc. when the NULs in ``head`` fall where UTF-16/32 puts them."""
    for width, names in ((4, ("utf-32-le", "utf-32-be")), (2, ("utf-16-le", "utf-16-be"))):
        usable = len(head) - len(head) % width
        if usable < 2 * width:
            continue
        units = usable // width
        for name, zero_lanes in zip(names, (range(1, width), range(width - 1)), strict=True):
            other = 0 if name.endswith("le") else width - 1
            zeros = min(head[lane:usable:width].count(0) for lane in zero_lanes)
            stray = head[other:usable:width].count(0)
            if (
                units >= _WIDE_MIN_UNITS
                and zeros >= _WIDE_NUL_SHARE * units
                and stray <= _WIDE_STRAY_SHARE * units
                and _decodes(head[:usable], name)
            ):
                return name
    return None


def utf8_error(data: bytes, complete: bool) -> int | None:
    """Offset of the first byte that is not UTF-8 (an unfinished last character
    counts only when ``complete``), or None."""
    if data.isascii():
        return None
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(data, complete)
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def not_utf8(offset: int) -> InvalidInput:
    return InvalidInput(f"not valid UTF-8 at byte offset {offset}")


def corrupt_utf8(data: bytes, bad: int) -> bool:
    """Whether ``data``, not UTF-8 from offset ``bad`` on, is UTF-8 text with a corrupt
    or truncated byte rather than text in another encoding: it has multi-byte UTF-8
    characters before (which text in a legacy encoding almost never forms by chance),
    or it only ends in the middle of a character."""
    return not data[:bad].isascii() or utf8_error(data[bad:], False) is None


def detect(sample: bytes) -> str | None:
    """charset-normalizer's best single encoding for ``sample``, near-ties broken
    by how common an encoding is; None when nothing decodes it as plausible text."""
    # UTF-16/32 are recognised by their BOM or NUL pattern (``choose``); a guess of
    # either for bytes with neither is binary data read two bytes at a time.
    matches = [m for m in from_bytes(sample) if not m.encoding.startswith(("utf_16", "utf_32"))]
    if not matches:
        return None
    best = matches[0]
    tied = [
        m
        for m in matches
        if m.chaos <= best.chaos + _CHAOS_TOLERANCE
        and m.coherence >= best.coherence - _COHERENCE_TOLERANCE
    ]
    names = {canonical(n) for m in tied for n in [m.encoding, *m.could_be_from_charset]}
    for name in _TIE_PREFERENCE:
        if name in names:
            return name
    return canonical(best.encoding)


def choose(head: bytes, *, complete: bool, declared: str | None = None) -> Encoding:
    """The encoding of a document that starts with ``head`` (all of it when
    ``complete``). Raises InvalidInput for binary data or bytes no encoding fits."""
    if declared is not None:
        name = canonical(declared)
        bom = from_bom(head)
        return Encoding(name, bom.bom if bom and bom.name == name else 0, "declared")
    if bom := from_bom(head):
        return bom
    if b"\x00" in head:
        if name := _wide(head):
            return Encoding(name, 0, "nul-pattern")
        raise looks_binary(head.index(b"\x00"))
    bad = utf8_error(head, complete)
    if bad is None:
        return Encoding("utf-8", 0, "utf-8")
    if corrupt_utf8(head, bad):
        raise not_utf8(bad)
    name = detect(head)
    if name is None:
        raise no_encoding_fits()
    return Encoding(name, 0, "detected")
