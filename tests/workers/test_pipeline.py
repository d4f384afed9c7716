"""A worker drives documents from queued to complete, against real PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingestd.shared.db.connect import connect
from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.shared.ingest import ingest_file
from ingestd.shared.tokens import count_tokens
from profiling import generators
from tests.workers.support import run_worker


def _doc(conn: Any, doc_id: Any) -> dict[str, Any]:
    return conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "corpus"
    d.mkdir()
    return {
        "txt": generators.write_text(d / "a.txt", 30_000, seed=1),
        "md": generators.write_markdown(d / "b.md", 30_000, seed=2),
        "html": generators.write_html(d / "c.html", 30_000, seed=3),
        "pdf": generators.write_pdf(d / "d.pdf", 12, seed=4),
    }


def test_every_format_reaches_complete_with_consistent_chunks(
    conn, db_url, make_settings, corpus
) -> None:
    settings = make_settings(chunk_target_tokens=256, chunk_overlap_tokens=32)
    ids = {kind: ingest_file(conn, path).document_id for kind, path in corpus.items()}
    run_worker(settings, db_url)
    for kind, doc_id in ids.items():
        doc = _doc(conn, doc_id)
        assert doc["status"] == "complete", (kind, doc["error_class"], doc["error_message"])
        rows = conn.execute(
            "SELECT ordinal, text, token_count, embedding FROM chunks WHERE document_id = %s"
            " ORDER BY ordinal",
            (doc_id,),
        ).fetchall()
        assert len(rows) == doc["chunks_total"] == doc["chunks_embedded"] > 1, kind
        assert [r["ordinal"] for r in rows] == list(range(len(rows)))
        for r in rows:
            assert r["token_count"] == count_tokens(r["text"]) <= 256
            vec = r["embedding"].to_numpy()
            assert vec.shape == (384,) and np.isfinite(vec).all() and np.linalg.norm(vec) > 0
        assert doc["tokens_total"] == sum(r["token_count"] for r in rows)
        assert doc["embed_tokens"] == doc["tokens_total"]
    pdf_text = " ".join(
        r["text"]
        for r in conn.execute(
            "SELECT text FROM chunks WHERE document_id = %s ORDER BY ordinal", (ids["pdf"],)
        )
    )
    assert "Page 1" in pdf_text and "Page 12" in pdf_text
    html_text = " ".join(
        r["text"]
        for r in conn.execute("SELECT text FROM chunks WHERE document_id = %s", (ids["html"],))
    )
    assert "# Part 1" in html_text and "<p>" not in html_text and "var x" not in html_text


def test_history_tells_what_happened(conn, db_url, make_settings, corpus) -> None:
    doc_id = ingest_file(conn, corpus["md"]).document_id
    run_worker(make_settings(), db_url)
    events = [
        (r["event"], r["to_status"])
        for r in conn.execute(
            "SELECT event, to_status FROM document_events WHERE document_id = %s ORDER BY id",
            (doc_id,),
        )
    ]
    assert events == [
        ("ingested", "queued"),
        ("claimed", "parsing"),
        ("stage_finished", "parsed"),
        ("stage_started", "chunking"),
        ("stage_finished", "chunked"),
        ("stage_started", "embedding"),
        ("stage_finished", "embedded"),
        ("stage_started", "finalizing"),
        ("stage_finished", "complete"),
    ]


BAD_INPUTS: dict[str, tuple[str, bytes | None]] = {
    "whitespace.txt": ("invalid_input", b"   \n\n\t  \n"),
    "garbage.txt": ("invalid_input", bytes(range(256)) * 64),
    "nul.txt": ("invalid_input", b"text, then NUL bytes: \x00\x00\x00 and more" * 10),
    "corrupt.pdf": ("invalid_input", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog" + b"\x00" * 500),
}


def test_bad_input_fails_classified_without_blocking_others(
    conn, db_url, make_settings, tmp_path, corpus
) -> None:
    paths = {}
    for name, (_cls, data) in BAD_INPUTS.items():
        p = tmp_path / name
        p.write_bytes(data or b"")
        paths[name] = p
    paths["encrypted.pdf"] = generators.write_pdf(tmp_path / "encrypted.pdf", 2, encrypt="s3cret")
    paths["scanned.pdf"] = generators.write_pdf(tmp_path / "scanned.pdf", 2, text=False)
    paths["unknown.bin"] = tmp_path / "unknown.bin"
    paths["unknown.bin"].write_bytes(b"\x89\x01\x02\x03" * 100)
    ids = {name: ingest_file(conn, p).document_id for name, p in paths.items()}
    good = ingest_file(conn, corpus["txt"]).document_id
    run_worker(make_settings(), db_url)
    for name, doc_id in ids.items():
        doc = _doc(conn, doc_id)
        assert doc["status"] == "failed", (name, doc["status"], doc["error_message"])
        assert doc["error_class"] == "invalid_input", name
        assert doc["error_message"] and len(doc["error_message"]) < 500
        claims = conn.execute(
            "SELECT count(*) AS n FROM document_events WHERE document_id = %s"
            " AND event = 'claimed'",
            (doc_id,),
        ).fetchone()["n"]
        assert (doc["attempts"], claims) == (1, 1), "a permanent error is not retried"
    messages = {name: _doc(conn, i)["error_message"] for name, i in ids.items()}
    assert "encrypt" in messages["encrypted.pdf"].lower()
    assert "text layer" in messages["scanned.pdf"]
    assert messages["nul.txt"] == "looks binary: NUL bytes at offset 22"
    assert _doc(conn, good)["status"] == "complete"


@pytest.mark.slow
def test_single_50mb_line_completes(conn, db_url, make_settings, tmp_path) -> None:
    path = tmp_path / "one-line.txt"
    word = "tokenisation"
    with path.open("w") as fh:
        for _ in range(50 * 2**20 // (4096 * (len(word) + 1))):
            fh.write((word + " ") * 4096)
    doc_id = ingest_file(conn, path).document_id
    run_worker(make_settings(), db_url)
    doc = _doc(conn, doc_id)
    assert doc["status"] == "complete", doc["error_message"]
    assert doc["chunks_total"] > 1000


def test_reingest_after_complete_is_a_no_op(conn, db_url, make_settings, corpus) -> None:
    first = ingest_file(conn, corpus["txt"])
    run_worker(make_settings(), db_url)
    n_chunks = conn.execute("SELECT count(*) AS n FROM chunks").fetchone()["n"]
    again = ingest_file(conn, corpus["txt"])
    assert again.document_id == first.document_id and not again.created
    assert again.status == "complete"
    run_worker(make_settings(), db_url)
    assert conn.execute("SELECT count(*) AS n FROM chunks").fetchone()["n"] == n_chunks


def test_embedding_space_mismatch_refuses_to_start(conn, db_url, make_settings, corpus) -> None:
    from ingestd.shared.errors import ConfigError

    ingest_file(conn, corpus["txt"])
    run_worker(make_settings(), db_url)
    other = make_settings(embedding_dimensions=128)
    with pytest.raises(ConfigError, match="reembed"):
        run_worker(other, db_url, embedder=HashEmbedder(dimensions=128))
    assert connect  # the module's connect is used by the fixtures


def test_hnsw_index_is_built_once_enough_vectors_exist(conn, db_url, make_settings, corpus) -> None:
    from ingestd.workers.maintenance import INDEX_NAME, index_state

    ingest_file(conn, corpus["txt"])
    run_worker(make_settings(index_min_rows=100_000), db_url)
    assert index_state(conn) == "missing", "too few vectors: no index yet"
    ingest_file(conn, corpus["md"])
    run_worker(make_settings(index_min_rows=5), db_url)
    assert index_state(conn) == "valid"
    conn.execute("SET enable_seqscan = off")  # tiny table: make the planner show it can
    plan = "\n".join(
        r["QUERY PLAN"]
        for r in conn.execute(
            "EXPLAIN SELECT ordinal FROM chunks ORDER BY embedding <=> "
            "(SELECT embedding FROM chunks LIMIT 1) LIMIT 5"
        )
    )
    assert INDEX_NAME in plan
