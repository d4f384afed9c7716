"""Memory regression tests: each stage streams, so its peak stays far below the size of
the document it handles.

Each document is several times larger than its test's limit, while the streaming code
peaks at a fraction of it: a stage that reads the whole document (or keeps every
block, chunk or batch) exceeds the limit and fails. pytest-memray counts only what
the test function itself allocates; inputs are made by fixtures, and the tiktoken
encoding (a fixed per-process cost) is loaded before. See profiling/README.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingestd.shared.batching import BatchItem, BatchLimits, batch_weight, pack
from ingestd.shared.chunking import Chunker
from ingestd.shared.db import chunks, jobs
from ingestd.shared.db.blobs import open_blob
from ingestd.shared.db.chunks import ChunkRow
from ingestd.shared.ingest import ingest_file
from ingestd.shared.parsers import iter_blocks
from ingestd.shared.states import Status
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.tokens import count_tokens, get_encoding
from ingestd.workers.context import StageContext
from ingestd.workers.stages import parse
from profiling import generators

MB = 2**20
TEXT_MB = 24  # text documents for the parse path
HTML_MB = 4
PDF_PAGES = 30
PDF_PADDING_MB = 32
CHUNK_TEXT_MB = 3
PACK_ITEMS = 20_000  # x 2,000 characters = 40 MB streamed through pack()
WRITE_ROWS = 10_000  # x 2,400 characters = 24 MB of chunk text written
DIMS = 384


@pytest.fixture(scope="module", autouse=True)
def _encoding_loaded() -> None:
    get_encoding()


def _repeat(path: Path, unit: Path, times: int) -> Path:
    """``times`` copies of ``unit``: a large document in a fraction of a second."""
    data = unit.read_bytes()
    with path.open("wb") as fh:
        for _ in range(times):
            fh.write(data)
    return path


@pytest.fixture(scope="module")
def prose_mb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory") / "prose-1mb.txt"
    return generators.write_text(path, MB, seed=11)


@pytest.fixture(scope="module")
def big_text(prose_mb: Path) -> Path:
    return _repeat(prose_mb.with_name("big.txt"), prose_mb, TEXT_MB)


@pytest.fixture(scope="module")
def chunk_text(prose_mb: Path) -> tuple[Path, int]:
    """The document and (about) its token count."""
    path = _repeat(prose_mb.with_name("chunk.txt"), prose_mb, CHUNK_TEXT_MB)
    return path, CHUNK_TEXT_MB * count_tokens(prose_mb.read_text())


@pytest.fixture(scope="module")
def html_doc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory-html") / "doc.html"
    return generators.write_html(path, HTML_MB * MB, seed=12)


def _pad_pdf(path: Path, padding: int) -> Path:
    """Append (as an incremental update) an unreferenced stream of ``padding`` random
    bytes: the file gets large, the text layer does not. A parser that reads by ranges
    never touches it; one that reads the whole file holds it all."""
    data = path.read_bytes()
    tail = data[-1024:].decode("latin-1")
    root = re.search(r"/Root (\d+ \d+ R)", tail)
    size = re.search(r"/Size (\d+)", tail)
    prev = re.findall(r"startxref\s+(\d+)", tail)
    assert root and size and prev, "unexpected PDF trailer"
    obj = int(size.group(1))
    with path.open("ab") as fh:
        fh.write(b"\n")
        obj_offset = fh.tell()
        fh.write(f"{obj} 0 obj\n<< /Length {padding} >>\nstream\n".encode())
        for _ in range(padding // MB):
            fh.write(os.urandom(MB))
        fh.write(b"\nendstream\nendobj\n")
        xref = fh.tell()
        fh.write(
            f"xref\n{obj} 1\n{obj_offset:010d} 00000 n \ntrailer\n"
            f"<< /Size {obj + 1} /Root {root.group(1)} /Prev {prev[-1]} >>\n"
            f"startxref\n{xref}\n%%EOF\n".encode()
        )
    return path


@pytest.fixture(scope="module")
def padded_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("memory-pdf") / "doc.pdf"
    generators.write_pdf(path, PDF_PAGES, seed=13)
    return _pad_pdf(path, PDF_PADDING_MB * MB)


def _blob(conn: Any, path: Path) -> tuple[Any, int, int]:
    doc_id = ingest_file(conn, path).document_id
    row = conn.execute(
        "SELECT blob_oid, size_bytes FROM documents WHERE id = %s", (doc_id,)
    ).fetchone()
    return doc_id, row["blob_oid"], row["size_bytes"]


def _chars(blocks: Iterable[str]) -> int:
    return sum(len(b) for b in blocks)


# -- parse ------------------------------------------------------------------------------


@pytest.mark.limit_memory("4 MB")
def test_text_parse_from_a_file_streams(big_text: Path) -> None:
    with big_text.open("rb") as fh:
        assert _chars(iter_blocks(fh, "text/plain")) == big_text.stat().st_size


@pytest.fixture
def text_blob(conn: Any, big_text: Path) -> tuple[Any, int, int]:
    return _blob(conn, big_text)


@pytest.mark.limit_memory("20 MB")
def test_text_parse_from_a_large_object_reads_ranges(
    conn: Any, text_blob: tuple[Any, int, int]
) -> None:
    _doc_id, oid, size = text_blob
    assert size > TEXT_MB * MB
    assert _chars(iter_blocks(open_blob(conn, oid, size), "text/plain")) == size


@pytest.mark.limit_memory("2 MB")
def test_html_parse_streams(html_doc: Path) -> None:
    with html_doc.open("rb") as fh:
        text = _chars(iter_blocks(fh, "text/html"))
    # Markup and the head are dropped; most of the document is prose.
    assert HTML_MB * MB * 0.6 < text < HTML_MB * MB


@pytest.fixture
def pdf_blob(conn: Any, padded_pdf: Path) -> tuple[Any, int, int]:
    return _blob(conn, padded_pdf)


@pytest.mark.limit_memory("16 MB")
def test_pdf_parse_from_a_large_object_reads_ranges(
    conn: Any, pdf_blob: tuple[Any, int, int]
) -> None:
    _doc_id, oid, size = pdf_blob
    assert size > PDF_PADDING_MB * MB
    blocks = iter_blocks(open_blob(conn, oid, size), "application/pdf")
    assert sum(b.count("Page ") for b in blocks) == PDF_PAGES


@pytest.fixture
def parse_context(conn: Any, make_settings: Any, text_blob: tuple[Any, int, int]) -> StageContext:
    settings = make_settings()
    doc_id = text_blob[0]
    claimed = jobs.claim(conn, "memtest:1:0:0", lease_seconds=60)
    assert [c.id for c in claimed] == [doc_id]
    doc = conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
    return StageContext(
        conn=conn,
        settings=settings,
        owner="memtest:1:0:0",
        doc=doc,
        status=Status.PARSING,
        metrics=Metrics(None, role="worker"),
    )


@pytest.mark.limit_memory("24 MB")
def test_parse_stage_writes_segments_in_bounded_groups(parse_context: StageContext) -> None:
    # blob -> parser -> parsed_segments, committed a group of blocks at a time.
    assert parse.run(parse_context) is Status.PARSED
    row = parse_context.conn.execute(
        "SELECT parsed_chars, parsed_segments FROM documents WHERE id = %s",
        (parse_context.doc_id,),
    ).fetchone()
    assert row["parsed_chars"] == parse_context.doc["size_bytes"] > TEXT_MB * MB
    assert row["parsed_segments"] >= TEXT_MB * MB // 65536


# -- chunk and batch --------------------------------------------------------------------


@pytest.mark.limit_memory("2 MB")
def test_chunker_streams(chunk_text: tuple[Path, int]) -> None:
    path, doc_tokens = chunk_text
    n = tokens = 0
    with path.open("rb") as fh:
        for c in Chunker(target_tokens=512, overlap_tokens=64).chunks(
            iter_blocks(fh, "text/plain")
        ):
            assert c.ordinal == n and c.token_count <= 512
            n += 1
            tokens += c.token_count
    # Every token of the document is in a chunk (some twice: the overlap).
    assert doc_tokens * 0.99 < tokens < doc_tokens * 1.2
    assert n > doc_tokens / 512


def _prose_items(n: int, size: int) -> Iterator[BatchItem]:
    """``n`` distinct texts of ``size`` characters, made as they are consumed."""
    base = " ".join(generators.WORDS * 300)
    span = len(base) - size
    for i in range(n):
        start = (i * 7919) % span
        yield BatchItem(i, base[start : start + size], size // 5)


@pytest.mark.limit_memory("8 MB")
def test_pack_holds_one_batch_at_a_time() -> None:
    limits = BatchLimits()
    packed = 0
    for batch in pack(_prose_items(PACK_ITEMS, 2000), limits):
        assert [b.key for b in batch] == list(range(packed, packed + len(batch)))
        assert batch_weight(batch) <= limits.max_request_tokens
        packed += len(batch)
    assert packed == PACK_ITEMS


# -- write chunks and vectors -----------------------------------------------------------


@pytest.fixture
def chunk_document(conn: Any, ingest_bytes: Any) -> Any:
    return ingest_bytes(b"chunks written by the memory test", name="rows.txt").document_id


@pytest.fixture(scope="module")
def unit_vectors() -> np.ndarray:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((BatchLimits().max_inputs, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _rows(n: int, size: int) -> Iterator[ChunkRow]:
    for item in _prose_items(n, size):
        yield ChunkRow(item.key, item.text, item.token_count)


@pytest.mark.limit_memory("16 MB")
def test_chunk_and_vector_writes_stream(
    conn: Any, chunk_document: Any, unit_vectors: np.ndarray
) -> None:
    name, version = Chunker.NAME, Chunker.VERSION
    with conn.transaction():
        assert (
            chunks.copy_chunks(conn, chunk_document, name, version, _rows(WRITE_ROWS, 2400))
            == WRITE_ROWS
        )
    written = 0
    unembedded = chunks.iter_unembedded(conn, chunk_document, name, version)
    items = (BatchItem(r.ordinal, r.text, r.token_count) for r in unembedded)
    for batch in pack(items, BatchLimits()):
        with conn.transaction():
            written += chunks.write_vectors(
                conn,
                chunk_document,
                name,
                version,
                "test-model",
                [b.key for b in batch],
                unit_vectors[: len(batch)],
            )
    assert written == WRITE_ROWS
    assert chunks.embedding_counts(conn, chunk_document, name, version) == (WRITE_ROWS, WRITE_ROWS)


# -- office documents --------------------------------------------------------------------

DOCX_PARAGRAPHS = 40_000  # ~14 MB of word/document.xml, ~13 MB of text


@pytest.fixture(scope="module")
def big_docx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.shared.office_docs import large_docx

    return large_docx(tmp_path_factory.mktemp("memory-docx") / "big.docx", DOCX_PARAGRAPHS)


@pytest.fixture
def docx_blob(conn: Any, big_docx: Path) -> tuple[Any, int, int]:
    return _blob(conn, big_docx)


@pytest.mark.limit_memory("8 MB")
def test_docx_parse_from_a_large_object_streams(conn: Any, docx_blob: tuple[Any, int, int]) -> None:
    _doc_id, oid, size = docx_blob
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    paragraphs = 0
    tail = ""  # a block may end inside the marker
    for block in iter_blocks(open_blob(conn, oid, size), mime):
        paragraphs += (tail + block).count("Paragraph ")
        tail = block[-9:]
    assert paragraphs == DOCX_PARAGRAPHS
