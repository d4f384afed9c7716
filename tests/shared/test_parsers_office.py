"""DOCX and PPTX: detection by content, the text they give, and the zip limits checked
before any part is inflated."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ingestd.shared.errors import InvalidInput
from ingestd.shared.parsers import DOCX, PPTX, detect_mime, iter_blocks, limits
from tests.shared.office_docs import (
    SAMPLE_DOCX_TEXT,
    SAMPLE_PPTX_TEXT,
    docx_bomb,
    large_docx,
    many_entries_docx,
    sample_docx,
    sample_pptx,
)
from tests.shared.test_parsers import StrictStream


class ZipStream(StrictStream):
    """zipfile reads the archive's last bytes (the directory record and a comment of
    up to 64 KiB) with a sizeless read(); anything else must name a size."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, seekable=True)
        self._size = len(data)

    def read(self, size: int = -1) -> bytes:
        if size == -1:
            assert self._size - self.tell() <= 65_557, "sizeless read() far from the end"
            size = self._size - self.tell()
        return super().read(size)


def _parse(data: bytes, mime: str, block_chars: int = 65536) -> list[str]:
    return list(iter_blocks(ZipStream(data), mime, block_chars=block_chars))  # type: ignore[arg-type]


def _error(data: bytes, mime: str) -> str:
    with pytest.raises(InvalidInput) as info:
        _parse(data, mime)
    return info.value.message


def test_docx_headings_lists_and_tables() -> None:
    assert "".join(_parse(sample_docx(), DOCX)) == SAMPLE_DOCX_TEXT


def test_pptx_titles_bodies_and_tables_in_slide_order() -> None:
    assert "".join(_parse(sample_pptx(), PPTX)) == SAMPLE_PPTX_TEXT


@pytest.mark.parametrize("block_chars", [16, 40, 1000])
def test_office_blocks_are_bounded(block_chars: int) -> None:
    blocks = _parse(sample_docx(), DOCX, block_chars)
    assert "".join(blocks) == SAMPLE_DOCX_TEXT
    assert max(map(len, blocks)) <= block_chars


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("report.docx", sample_docx(), DOCX),
        ("report.bin", sample_docx(), DOCX),
        ("no-extension", sample_pptx(), PPTX),
        ("deck.docx", sample_pptx(), PPTX),  # content wins over the name
    ],
)
def test_office_detected_by_content(name: str, data: bytes, expected: str) -> None:
    assert detect_mime(name, data[:4096]) == expected


def test_a_zip_bomb_is_refused_from_the_directory(tmp_path: Path) -> None:
    data = docx_bomb(tmp_path / "bomb.docx", 300 * 2**20).read_bytes()
    assert 250_000 < len(data) < 2**20
    stream = ZipStream(data)
    with pytest.raises(InvalidInput, match=r"'word/document.xml' inflates \d+:1"):
        list(iter_blocks(stream, DOCX))  # type: ignore[arg-type]
    # Refused from the directory: only the archive's tail (where a 64 KiB comment may
    # hide the end record) and the directory were read, nothing of the part itself.
    assert stream.bytes_read < 70_000


def test_too_much_xml_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = large_docx(tmp_path / "big.docx", 2000).read_bytes()
    monkeypatch.setattr(limits, "MAX_OFFICE_XML_BYTES", 100_000)
    assert "bytes of XML; the limit is 100000" in _error(data, DOCX)


def test_too_many_entries_are_refused_before_the_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = many_entries_docx(tmp_path / "many.docx", 300).read_bytes()
    monkeypatch.setattr(limits, "MAX_ZIP_ENTRIES", 100)
    assert _error(data, DOCX) == "DOCX has 301 zip entries; the limit is 100"


@pytest.mark.parametrize(
    ("data", "mime", "message"),
    [
        (sample_docx()[:3000], DOCX, "DOCX is not a zip archive (no central directory)"),
        (sample_pptx(), DOCX, "DOCX is missing its part 'word/document.xml'"),
        (sample_docx(), PPTX, "PPTX is missing its part 'ppt/presentation.xml'"),
    ],
)
def test_broken_office_files(data: bytes, mime: str, message: str) -> None:
    assert message in _error(data, mime)


def _replace_part(data: bytes, name: str, content: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, content if info.filename == name else src.read(info))
    return out.getvalue()


def test_entities_are_not_expanded_and_bad_xml_is_corrupt() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p><w:r><w:t>real &c;</w:t></w:r></w:p></w:body></w:document>"
    )
    text = "".join(_parse(_replace_part(sample_docx(), "word/document.xml", laughs), DOCX))
    assert text.startswith("real") and "aaaa" not in text
    broken = _replace_part(sample_docx(), "word/document.xml", b"<w:document><w:body>")
    assert "DOCX is corrupt: word/document.xml" in _error(broken, DOCX)


def test_an_empty_docx_is_empty() -> None:
    empty = _replace_part(
        sample_docx(),
        "word/document.xml",
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        b"<w:body><w:p/></w:body></w:document>",
    )
    assert _error(empty, DOCX) == "document is empty (DOCX has no text)"
