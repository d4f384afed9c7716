"""Text in any common encoding: BOMs, BOM-less UTF-16/32, detection, and clear
messages for binary data."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import TEXT_HTML, TEXT_PLAIN, detect_mime, iter_blocks
from tests.shared.test_parsers import StrictStream

FRENCH = "Crème brûlée, déjà vu à l'hôtel; la façade naïve de l'été.\n"


def _decode(data: bytes, mime: str = TEXT_PLAIN, **kw: object) -> tuple[str, str | None]:
    blocks = iter_blocks(StrictStream(data, **kw), mime, block_chars=64)  # type: ignore[arg-type]
    text = "".join(blocks)
    return text, blocks.encoding  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (codecs.BOM_UTF8 + FRENCH.encode(), "utf-8"),
        (codecs.BOM_UTF16_LE + FRENCH.encode("utf-16-le"), "utf-16-le"),
        (codecs.BOM_UTF16_BE + FRENCH.encode("utf-16-be"), "utf-16-be"),
        (codecs.BOM_UTF32_LE + FRENCH.encode("utf-32-le"), "utf-32-le"),
        (codecs.BOM_UTF32_BE + FRENCH.encode("utf-32-be"), "utf-32-be"),
        (FRENCH.encode("utf-16-le"), "utf-16-le"),
        (FRENCH.encode("utf-16-be"), "utf-16-be"),
        (FRENCH.encode("latin-1"), "cp1252"),
        (FRENCH.encode("cp1252"), "cp1252"),
        ("Příliš žluťoučký kůň úpěl ďábelské ódy.\n".encode("cp1250"), "cp1250"),
        ("Привет, как дела? Это обычный русский текст.\n".encode("cp1251"), "cp1251"),
    ],
)
def test_encodings_decode_to_the_same_text(data: bytes, encoding: str) -> None:
    text, found = _decode(data)
    assert found == encoding
    assert text == data.decode(encoding).removeprefix("\ufeff")


@given(st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_any_text_with_a_bom_round_trips(text: str) -> None:
    for name in ("utf-8-sig", "utf-16", "utf-32"):
        data = text.encode(name)
        assert detect_mime("x.txt", data[:4096]) == TEXT_PLAIN
        if not text.isspace():
            assert _decode(data, chunk=7)[0] == text.replace("\r\n", "\n").replace("\r", "\n")


def test_latin1_after_a_long_ascii_start_is_found_on_a_seekable_stream() -> None:
    data = b"plain ascii line\n" * 10_000 + FRENCH.encode("latin-1")
    text, found = _decode(data, seekable=True)
    assert found == "cp1252" and text.endswith(FRENCH)
    # Without seeking the choice is made from the start, and the later byte is reported.
    with pytest.raises(InvalidInput, match=r"not valid UTF-8 at byte offset 170002"):
        _decode(data)


def test_utf8_with_a_corrupt_byte_is_not_taken_for_another_encoding() -> None:
    unit = "déjà vu ✓ ".encode()  # 14 bytes
    for times in (10, 10_000):  # in the first 64 KiB, and past them
        with pytest.raises(InvalidInput) as info:
            _decode(unit * times + b"\xff tail", seekable=True)
        assert info.value.message == f"not valid UTF-8 at byte offset {14 * times}"


def test_declared_charset_wins() -> None:
    data = FRENCH.encode("iso8859-15")
    assert _decode(data, "text/plain; charset=ISO-8859-15") == (FRENCH, "iso8859-15")
    html = "<p>Voilà déjà l'été, où êtes-vous ?</p>".encode("cp1252")
    assert _decode(html, TEXT_HTML) == ("Voilà déjà l'été, où êtes-vous ?", "cp1252")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("a.txt", b"header\x00\x00\x01\x02\x00junk" * 20, "looks binary: NUL bytes at offset 6"),
        ("b", b"\x00\x00\x01\x07" * 100, "looks binary: NUL bytes at offset 0"),
        ("c.dat", b"\x89\x01\x02\x03" * 100, "no text encoding fits"),
    ],
)
def test_binary_is_named_as_such(name: str, data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as at_ingest:
        detect_mime(name, data[:4096])
    assert message in at_ingest.value.message
    # Stored as octet-stream, the parse stage gives the same reason.
    with pytest.raises(InvalidInput) as at_parse:
        iter_blocks(StrictStream(data), "application/octet-stream", filename=name)  # type: ignore[arg-type]
    assert at_parse.value.message == at_ingest.value.message


def test_sniff_sizes_agree() -> None:
    from ingestd.shared import ingest, parsers

    assert ingest.SNIFF_BYTES == parsers.SNIFF_BYTES
