"""A catalogue of hostile inputs, written into a directory: each a file (or a FIFO, a
symlink, a loop) an attacker or an unlucky user could hand to ``ingestd ingest`` or upload."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from pypdf import PdfWriter
from reportlab.pdfgen import canvas

BLANK_PAGES = 2000
ESCAPE_NAME = "esc\x1b]0;PWNED-TITLE\x07\x1b[2J.txt"
CONTROL_NAME = "ctl\x01\x7f\ttab.txt"


def _pdf(pages: int, text: str = "") -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for _ in range(pages):
        if text:
            c.drawString(72, 720, text)
        c.showPage()
    c.save()
    return buf.getvalue()


def _encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt("owner-and-user-password")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _docx_bomb(inflated: int = 120 * 1024 * 1024) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with z.open("word/document.xml", "w") as f:
            f.write(b'<?xml version="1.0"?><w:document><w:body><w:p><w:r><w:t>')
            block = b" " * (1 << 20)
            for _ in range(inflated >> 20):
                f.write(block)
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return buf.getvalue()


def files() -> dict[str, bytes]:
    """Regular files by name: what both the CLI and the upload route get."""
    good = _pdf(3, "a readable page of text")
    return {
        "truncated.pdf": good[: len(good) // 2],
        "corrupt.pdf": b"%PDF-1.7\n" + os.urandom(4096),
        "encrypted.pdf": _encrypted_pdf(),
        "blank-pages.pdf": _pdf(BLANK_PAGES),
        "huge-line.txt": b"x" * (3 * 1024 * 1024),
        "nested.html": b"<div>" * 20000 + b"deep" + b"</div>" * 20000,
        "invalid-encoding.txt": b"caf\xe9 \xff\xfe\xfd \xc3\x28 broken \x80\x81" * 200,
        "png-named.txt": b"\x89PNG\r\n\x1a\n" + os.urandom(2048),
        "pdf-named.html": good,
        "nul-bytes.txt": b"text\x00with\x00nuls " * 500,
        ESCAPE_NAME: b"a file whose name tries to retitle the terminal",
        CONTROL_NAME: b"a file whose name holds control characters",
        "bomb.docx": _docx_bomb(),
    }


def write_tree(root: Path) -> dict[str, bytes]:
    """The files, plus what only a directory can hold: a FIFO, a symlink out of the
    tree, a directory loop."""
    root.mkdir(parents=True, exist_ok=True)
    catalogue = files()
    for name, data in catalogue.items():
        (root / name).write_bytes(data)
    os.mkfifo(root / "fifo.txt")
    (root / "passwd.txt").symlink_to("/etc/passwd")
    (root / "loop").mkdir()
    (root / "loop" / "back").symlink_to(root, target_is_directory=True)
    return catalogue
