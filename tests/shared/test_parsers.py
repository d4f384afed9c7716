"""Local parsers: MIME detection, streaming text/HTML/PDF extraction and their errors."""

from __future__ import annotations

import io
import os
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, StreamObject
from reportlab.pdfgen import canvas

from ingestd.shared.errors import ErrorClass, InvalidInput
from ingestd.shared.parsers import (
    APPLICATION_PDF,
    DOCX,
    PARSER_VERSION,
    PPTX,
    SUPPORTED_MIME_TYPES,
    TEXT_HTML,
    TEXT_MARKDOWN,
    TEXT_PLAIN,
    detect_mime,
    html_md,
    iter_blocks,
    normalize_mime,
    parser_name,
)


class StrictStream(io.RawIOBase):
    """The contract production streams offer: read(n) with a size, plus
    seek/tell when ``seekable``. Counts what was read."""

    def __init__(self, data: bytes, *, seekable: bool = False, chunk: int | None = None) -> None:
        self._data = data
        self._pos = 0
        self._seekable = seekable
        self._chunk = chunk  # short reads, as a network-backed stream may do
        self.bytes_read = 0
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "read() without a size would load everything"
        if self._chunk:
            size = min(size, self._chunk)
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        self.bytes_read += len(out)
        self.largest_read = max(self.largest_read, size)
        return out

    def readinto(self, buffer: object) -> int:
        raise AssertionError("production streams have no readinto")

    def seek(self, offset: int, whence: int = 0) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos


class PatternStream(io.RawIOBase):
    """``total`` bytes of a repeated pattern, generated on demand (never held whole)."""

    def __init__(self, pattern: bytes, total: int) -> None:
        self._pattern = pattern * (65536 // len(pattern) + 2)
        self._period = len(pattern)
        self._left = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0
        size = min(size, self._left, 65536)
        start = self._pos % self._period
        out = self._pattern[start : start + size]
        self._pos += size
        self._left -= size
        return out


def parse(data: bytes, mime: str, *, block_chars: int = 65536, **kw: object) -> list[str]:
    return list(iter_blocks(StrictStream(data, **kw), mime, block_chars=block_chars))  # type: ignore[arg-type]


def parse_error(data: bytes, mime: str, **kw: object) -> str:
    with pytest.raises(InvalidInput) as info:
        parse(data, mime, **kw)  # type: ignore[arg-type]
    assert info.value.error_class is ErrorClass.INVALID_INPUT
    return info.value.message


# --- MIME detection --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("report.pdf", b"%PDF-1.7\n...", APPLICATION_PDF),
        ("misnamed.txt", b"%PDF-1.4\n...", APPLICATION_PDF),
        ("scan.PDF", b"\n\n junk %PDF-1.4\n", APPLICATION_PDF),
        ("notes.txt", b"hello", TEXT_PLAIN),
        ("notes.TEXT", b"hello", TEXT_PLAIN),
        ("readme.md", b"# Title\n<div>html inside markdown</div>", TEXT_MARKDOWN),
        ("readme.markdown", b"# Title", TEXT_MARKDOWN),
        ("page.html", b"just text", TEXT_HTML),
        ("page.HTM", b"<p>x</p>", TEXT_HTML),
        ("download", b"\xef\xbb\xbf  <!DOCTYPE html><html>", TEXT_HTML),
        ("page.php", b"<html><body>x</body></html>", TEXT_HTML),
        ("page.xhtml", b'<?xml version="1.0"?>\n<html xmlns="...">', TEXT_HTML),
        ("data.csv", b"a,b\n1,2\n", TEXT_PLAIN),
        ("LICENSE", "Copyright © 2024 — all rights".encode(), TEXT_PLAIN),
        ("empty", b"", TEXT_PLAIN),
        # The head may end inside a multi-byte character.
        ("cut.log", "ab€".encode()[:-1], TEXT_PLAIN),
    ],
)
def test_detect_mime(name: str, head: bytes, expected: str) -> None:
    assert detect_mime(name, head) == expected


@pytest.mark.parametrize(
    ("name", "head", "message"),
    [
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unsupported binary '.png' file"),
        ("archive.zip", b"PK\x03\x04\x14\x00\x06\x00", "neither DOCX nor PPTX"),
        (
            "blob",
            bytes(range(256)),
            "unsupported binary file (looks binary: NUL bytes at offset 0)",
        ),
        ("notes.txt", b"text\x00\x00\x00more", "looks binary: NUL bytes at offset 4"),
        ("old.doc.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "encrypted or in the old binary"),
        ("report.docx", b"plain text", "file is named .docx but is not a zip archive"),
        ("fake.pdf", b"hello, not a pdf", "file is named .pdf but has no PDF header"),
    ],
)
def test_detect_mime_rejects(name: str, head: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        detect_mime(name, head)
    assert message in info.value.message


def test_normalize_mime_and_parser_names() -> None:
    assert normalize_mime("Text/HTML; charset=UTF-8") == TEXT_HTML
    assert normalize_mime("text/x-markdown") == TEXT_MARKDOWN
    assert normalize_mime('text/plain; charset="us-ascii"') == TEXT_PLAIN
    assert normalize_mime("text/plain; charset=latin-1") == TEXT_PLAIN
    with pytest.raises(InvalidInput, match="unknown charset 'no-such-codec'"):
        normalize_mime("text/plain; charset=no-such-codec")
    with pytest.raises(InvalidInput, match="unsupported MIME type 'image/png'"):
        normalize_mime("image/png")
    names = {mime: parser_name(mime) for mime in SUPPORTED_MIME_TYPES}
    assert names == {
        TEXT_PLAIN: "local-text",
        TEXT_MARKDOWN: "local-text",
        TEXT_HTML: "local-html",
        APPLICATION_PDF: "local-pdfium",
        DOCX: "local-docx",
        PPTX: "local-pptx",
    }
    with pytest.raises(InvalidInput):
        parser_name("application/msword")
    assert isinstance(PARSER_VERSION, int) and PARSER_VERSION >= 1


def test_iter_blocks_validates_eagerly() -> None:
    with pytest.raises(InvalidInput, match="unsupported MIME type"):
        iter_blocks(StrictStream(b"x"), "image/png")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_chars"):
        iter_blocks(StrictStream(b"x"), TEXT_PLAIN, block_chars=3)  # type: ignore[arg-type]


# --- text ----------------------------------------------------------------------------


def test_text_round_trip_normalises_newlines_and_bom() -> None:
    data = "\ufeffLine one\r\nLine two\rLine three\n\nünïcödé ✓ 😀\n".encode()
    assert "".join(parse(data, TEXT_PLAIN)) == "Line one\nLine two\nLine three\n\nünïcödé ✓ 😀\n"


def test_text_blocks_are_bounded_whatever_the_read_sizes() -> None:
    rng = random.Random(3)
    alphabet = "abc de\r\n€😀漢"
    text = "".join(rng.choice(alphabet) for _ in range(20000))
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    for block_chars in (16, 17, 100, 4096):
        for chunk in (None, 1, 3, 7):
            blocks = parse(text.encode(), TEXT_MARKDOWN, block_chars=block_chars, chunk=chunk)
            assert "".join(blocks) == expected
            assert max(map(len, blocks)) <= block_chars
            assert all(blocks)


@pytest.mark.parametrize("chunk", [None, 1, 2, 5])
def test_invalid_utf8_reports_the_byte_offset(chunk: int | None) -> None:
    prefix = ("é" * 50 + "x" * 37).encode()  # 137 bytes, reads of 15 bytes split characters
    data = prefix + b"\xc3\x28 rest"
    message = parse_error(data, TEXT_PLAIN, block_chars=16, chunk=chunk)
    assert message == f"not valid UTF-8 at byte offset {len(prefix)}"


def test_truncated_utf8_at_end_reports_its_offset() -> None:
    data = b"abc" + "€".encode()[:2]
    assert parse_error(data, TEXT_PLAIN) == "not valid UTF-8 at byte offset 3"


def test_invalid_utf8_offset_past_the_first_read() -> None:
    data = b"a" * 200_000 + b"\xff" + b"b" * 10
    assert parse_error(data, TEXT_PLAIN) == "not valid UTF-8 at byte offset 200000"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"text with a \x00 NUL byte", "looks binary: NUL bytes at offset 12"),
        (
            bytes(range(1, 9)) * 40 + b"abc",
            "looks binary: more than 1 character in 10 is a control character",
        ),
        (b"", "document is empty"),
        (b" \n\t\r\n  \n", "document is empty"),
        (b"\xef\xbb\xbf\n", "document is empty"),
    ],
)
def test_text_rejects(data: bytes, message: str) -> None:
    assert parse_error(data, TEXT_PLAIN) == message


def test_text_tolerates_a_few_control_characters() -> None:
    data = b"log line \x1b[31mred\x1b[0m\x07 bell\x08\n" + b"normal text\n" * 20
    assert "".join(parse(data, TEXT_PLAIN)).startswith("log line \x1b[31mred")


def test_a_50_mb_single_line_streams_in_bounded_blocks() -> None:
    total = 50 * 1024 * 1024
    stream = PatternStream("word€ ".encode(), total)
    tracemalloc.start()
    try:
        chars = 0
        largest = 0
        for block in iter_blocks(stream, TEXT_PLAIN):  # type: ignore[arg-type]
            chars += len(block)
            largest = max(largest, len(block))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert chars == total // 8 * 6  # "word€ " is 6 characters in 8 bytes
    assert largest <= 65536
    assert peak < 2 * 1024 * 1024


# --- HTML -----------------------------------------------------------------------------

HTML_DOC = """<!DOCTYPE html>
<html><head><title>Not content</title><meta charset="utf-8">
<style>body { color: red }</style><script>var s = "<p>not content</p>";</script></head>
<body>
<nav>Home</nav>
<h1>Guide &amp; Manual</h1>
<p>First   paragraph,
spread over <b>two</b> lines &lt;ok&gt;.</p>
<div>Second paragraph&nbsp;here.<br>After a break.</div>
<h2>Install<br>steps</h2>
<ul><li>one</li><li> two <ul><li>nested</li></ul></li><li>three</li></ul>
<ol><li>first</li></ol>
<pre>
# not a heading
  indented line</pre>
<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>
<h6>Deep</h6><p>caf&eacute; &#8364; &#x1F600;</p>
<noscript>enable JS</noscript><template><p>hidden</p></template>
</body></html>"""

HTML_EXPECTED = """Home

# Guide & Manual

First paragraph, spread over two lines <ok>.

Second paragraph here.
After a break.

## Install steps

- one
- two
  - nested
- three

- first

```
# not a heading
  indented line
```

k | v
a | 1

###### Deep

café € 😀"""


def test_html_to_markdown() -> None:
    assert "".join(parse(HTML_DOC.encode(), TEXT_HTML)) == HTML_EXPECTED


def test_html_output_does_not_depend_on_feed_or_block_sizes() -> None:
    data = (HTML_DOC * 30).encode()
    reference = "".join(parse(data, TEXT_HTML))
    for block_chars, chunk in ((16, 1), (50, 7), (1000, 333)):
        blocks = parse(data, TEXT_HTML, block_chars=block_chars, chunk=chunk)
        assert "".join(blocks) == reference
        assert max(map(len, blocks)) <= block_chars


def test_html_without_closing_head_keeps_the_body() -> None:
    data = b"<html><head><title>t</title><body><p>Body text</p></body></html>"
    assert "".join(parse(data, TEXT_HTML)) == "Body text"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"<html><head><title>x</title></head><body><script>1</script></body>",
            "document is empty (no text outside markup)",
        ),
        (b"", "document is empty (no text outside markup)"),
        ("<p>é</p>".encode() + b"\xff", "not valid UTF-8 at byte offset 9"),
        (b"<p>\x00</p>", "looks binary: NUL bytes at offset 3"),
    ],
)
def test_html_rejects(data: bytes, message: str) -> None:
    assert parse_error(data, TEXT_HTML) == message


def test_html_unterminated_construct_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_md, "MAX_PENDING_CHARS", 100_000)
    data = b"<p>start</p><!-- " + b"never closed " * 20_000
    assert "unterminated tag, comment or script" in parse_error(data, TEXT_HTML)


def test_html_large_document_streams() -> None:
    paragraph = "<p>" + "Some words in a paragraph. " * 20 + "</p>\n"
    data = ("<html><body>" + paragraph * 5000 + "</body></html>").encode()  # ~2.8 MB
    stream = StrictStream(data)
    blocks = iter_blocks(stream, TEXT_HTML)  # type: ignore[arg-type]
    first = next(blocks)
    assert len(first) == 65536
    assert stream.bytes_read < len(data) // 4  # the first block came before reading it all
    assert stream.largest_read <= 65536
    rest = list(blocks)
    assert max(map(len, rest)) <= 65536


# --- PDF ------------------------------------------------------------------------------


def make_pdf(pages: list[list[str]], *, drawing_only: bool = False) -> bytes:
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf)
    for lines in pages:
        if drawing_only:
            pdf.rect(72, 500, 200, 100, fill=1)
        for index, line in enumerate(lines):
            pdf.drawString(72, 720 - 16 * index, line)
        pdf.showPage()
    pdf.save()
    return buf.getvalue()


def rewrite(
    data: bytes, *, user_password: str | None = None, owner: str = "owner", junk_bytes: int = 0
) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    if junk_bytes:
        junk = StreamObject()
        junk.set_data(os.urandom(junk_bytes))
        writer._root_object[NameObject("/Junk")] = writer._add_object(junk)
    if user_password is not None:
        writer.encrypt(user_password=user_password, owner_password=owner)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_pdf_text_page_by_page() -> None:
    data = make_pdf([["First page. Café"], [], ["Third page", "second line"]])
    text = "".join(parse(data, APPLICATION_PDF, seekable=True))
    assert text == "First page. Café\n\nThird page\nsecond line"
    assert "<!--" not in text


def test_pdf_blocks_are_bounded_and_range_read() -> None:
    lines = [f"Line {n} of a long page with several words on it." for n in range(40)]
    data = rewrite(make_pdf([lines] * 20), junk_bytes=3_000_000)
    stream = StrictStream(data, seekable=True)
    blocks = list(iter_blocks(stream, APPLICATION_PDF, block_chars=256))  # type: ignore[arg-type]
    assert max(map(len, blocks)) <= 256
    text = "".join(blocks)
    assert text.count("Line 39 of a long page") == 20
    # PDFium fetched what it needed, not the 3 MB it never looks at.
    assert stream.bytes_read < len(data) // 10


def test_pdf_owner_password_only_is_readable() -> None:
    data = rewrite(make_pdf([["Restricted but readable"]]), user_password="")
    assert "".join(parse(data, APPLICATION_PDF, seekable=True)) == "Restricted but readable"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rewrite(make_pdf([["secret"]]), user_password="pw"), "PDF is encrypted"),
        (lambda: make_pdf([["x"]])[:300], "PDF is corrupt or unreadable: "),
        (lambda: b"%PDF-1.4\n" + os.urandom(2000), "PDF is corrupt or unreadable: "),
        (
            lambda: make_pdf([[], []], drawing_only=True),
            "PDF has no text layer: 2 pages, 0 characters; OCR is not done here",
        ),
    ],
)
def test_pdf_rejects(make: object, message: str) -> None:
    assert parse_error(make(), APPLICATION_PDF, seekable=True).startswith(message)  # type: ignore[operator]


def test_pdf_needs_a_seekable_stream() -> None:
    with pytest.raises(ValueError, match="seekable"):
        parse(make_pdf([["x"]]), APPLICATION_PDF, seekable=False)


class FailingStream(StrictStream):
    def __init__(self, data: bytes, fail_after: int) -> None:
        super().__init__(data, seekable=True)
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self.bytes_read >= self._fail_after:
            raise ConnectionError("large object read failed")
        return super().read(size)


@pytest.mark.parametrize("fail_after", [0, 100, 2000])
def test_pdf_io_errors_surface_as_themselves(fail_after: int) -> None:
    """A failed read must not be disguised as a corrupt document."""
    data = make_pdf([["page one"], ["page two"]])
    with pytest.raises(ConnectionError, match="large object read failed"):
        list(iter_blocks(FailingStream(data, fail_after), APPLICATION_PDF))  # type: ignore[arg-type]


def test_pdf_stops_cleanly_when_abandoned() -> None:
    data = make_pdf([["one"], ["two"], ["three"]])
    blocks: Iterator[str] = iter_blocks(StrictStream(data, seekable=True), APPLICATION_PDF)  # type: ignore[arg-type]
    assert next(blocks) == "one"
    blocks.close()  # type: ignore[attr-defined]


def test_pdf_reopened_every_n_pages_keeps_every_page_in_order(tmp_path, monkeypatch) -> None:
    from ingestd.shared.parsers import iter_blocks as _iter_blocks
    from ingestd.shared.parsers import pdf as pdf_module
    from profiling.generators import write_pdf

    monkeypatch.setattr(pdf_module, "REOPEN_EVERY_PAGES", 3)
    path = write_pdf(tmp_path / "seven.pdf", 7, seed=5)
    with path.open("rb") as fh:
        text = "".join(_iter_blocks(fh, "application/pdf"))
    positions = [
        text.index(f"Page {n}\n") if f"Page {n}\n" in text else text.index(f"Page {n}")
        for n in range(1, 8)
    ]
    assert positions == sorted(positions)
