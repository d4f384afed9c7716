"""Realistic inputs made at run time (nothing large is committed): prose, Markdown,
HTML and PDFs of any size, written to disk in a stream so that making a 100 MB
file costs no 100 MB of memory. Deterministic for a given seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

WORDS = [
    "the",
    "vector",
    "index",
    "stores",
    "embeddings",
    "of",
    "every",
    "chunk",
    "so",
    "that",
    "queries",
    "find",
    "related",
    "passages",
    "quickly",
    "while",
    "workers",
    "claim",
    "documents",
    "from",
    "postgres",
    "under",
    "leases",
    "and",
    "retries",
    "back",
    "off",
    "with",
    "jitter",
    "when",
    "the",
    "remote",
    "service",
    "answers",
    "slowly",
    "or",
    "refuses",
    "with",
    "a",
    "rate",
    "limit",
    "error",
    "memory",
    "stays",
    "flat",
    "because",
    "parsers",
    "stream",
    "blocks",
    "and",
    "batches",
    "are",
    "bounded",
    "by",
    "tokens",
    "operators",
    "watch",
    "metrics",
    "dashboards",
    "and",
    "alerts",
    "tell",
    "them",
    "when",
    "throughput",
    "drops",
    "or",
    "costs",
    "rise",
]


def sentences(rng: random.Random) -> Iterator[str]:
    while True:
        n = rng.randint(6, 22)
        words = [rng.choice(WORDS) for _ in range(n)]
        words[0] = words[0].capitalize()
        yield " ".join(words) + rng.choice([".", ".", ".", "?", "!"])


def paragraphs(rng: random.Random) -> Iterator[str]:
    gen = sentences(rng)
    while True:
        yield " ".join(next(gen) for _ in range(rng.randint(2, 7)))


def _write_until(path: Path, size: int, pieces: Iterator[str]) -> Path:
    written = 0
    with path.open("w", encoding="utf-8") as fh:
        for piece in pieces:
            fh.write(piece)
            written += len(piece.encode("utf-8"))
            if written >= size:
                break
    return path


def write_text(path: Path, size: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    return _write_until(path, size, (p + "\n\n" for p in paragraphs(rng)))


def markdown_pieces(rng: random.Random) -> Iterator[str]:
    paras = paragraphs(rng)
    chapter = 0
    while True:
        chapter += 1
        yield f"# Chapter {chapter}\n\n"
        for section in range(1, rng.randint(2, 5)):
            yield f"## Section {chapter}.{section}\n\n"
            for _ in range(rng.randint(2, 6)):
                yield next(paras) + "\n\n"
            if rng.random() < 0.3:
                yield "".join(f"- {next(sentences(rng))}\n" for _ in range(3)) + "\n"


def write_markdown(path: Path, size: int, seed: int = 0) -> Path:
    return _write_until(path, size, markdown_pieces(random.Random(seed)))


def write_html(path: Path, size: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    paras = paragraphs(rng)

    def pieces() -> Iterator[str]:
        yield "<!doctype html><html><head><title>Generated</title>"
        yield "<style>p { margin: 0 }</style><script>var x = 1;</script></head><body>\n"
        n = 0
        while True:
            n += 1
            yield f"<h1>Part {n}</h1>\n"
            for _ in range(rng.randint(2, 5)):
                yield f"<p>{next(paras)}</p>\n"
            yield "<ul><li>first &amp; foremost</li><li>second</li></ul>\n"

    _write_until(path, size, pieces())
    with path.open("a", encoding="utf-8") as fh:
        fh.write("</body></html>\n")
    return path


def write_pdf(
    path: Path, pages: int, seed: int = 0, *, encrypt: str | None = None, text: bool = True
) -> Path:
    """A PDF of ``pages`` pages of prose (or of shapes only, with ``text=False``)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    rng = random.Random(seed)
    gen = sentences(rng)
    c = canvas.Canvas(str(path), pagesize=A4, encrypt=encrypt, pageCompression=1)
    width, height = A4
    for page in range(pages):
        if text:
            c.setFont("Helvetica-Bold", 14)
            c.drawString(60, height - 60, f"Page {page + 1}")
            c.setFont("Helvetica", 10)
            y = height - 90
            while y > 60:
                c.drawString(60, y, next(gen)[:95])
                y -= 14
        else:
            c.rect(60, 60, width - 120, height - 120, fill=1)
        c.showPage()
    c.save()
    return path
