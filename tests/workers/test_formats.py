"""DOCX, PPTX and text in other encodings through the real pipeline (issues 16 and 18):
sniffed at ingestion, parsed, chunked, embedded, with the right text; binary junk and a
zip bomb fail invalid_input on their first attempt, saying what is wrong."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ingestd.shared.ingest import ingest_stream
from tests.shared.office_docs import docx_bomb, sample_docx, sample_pptx
from tests.workers.support import run_worker

LATIN = "Crème brûlée, déjà vu à l'hôtel; naïve façade: Ærø, Øresund, Ñandú, ¿qué?"
CP1252 = "“Smart quotes” — en dash – and a price of €5 … ‰ œuvre"
WIDE = "Ünïcödé in UTF-16: Ελληνικά, кириллица, 漢字 and plain ASCII"


def _ingest(conn: Any, files: dict[str, bytes]) -> dict[str, Any]:
    """Each file as ingestion sees one: no MIME type given, detection decides."""
    return {
        name: ingest_stream(conn, io.BytesIO(data), source=f"test://{name}", filename=name)
        for name, data in files.items()
    }


def _doc(conn: Any, doc_id: Any) -> dict[str, Any]:
    return conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()


def _text(conn: Any, doc_id: Any) -> str:
    rows = conn.execute(
        "SELECT text FROM chunks WHERE document_id = %s ORDER BY ordinal", (doc_id,)
    ).fetchall()
    return " ".join(" ".join(r["text"] for r in rows).split())


def _parsed_details(conn: Any, doc_id: Any) -> dict[str, Any]:
    row = conn.execute(
        "SELECT details FROM document_events WHERE document_id = %s AND to_status = 'parsed'",
        (doc_id,),
    ).fetchone()
    return row["details"]


def _claims(conn: Any, doc_id: Any) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM document_events WHERE document_id = %s AND event = 'claimed'",
        (doc_id,),
    ).fetchone()["n"]


def test_office_and_encoded_text_complete_with_the_right_text(
    conn: Any, db_url: str, make_settings: Any
) -> None:
    files = {
        "report.docx": sample_docx(),
        "deck.pptx": sample_pptx(),
        "renamed.bin": sample_docx(),  # detected by content, not by name
        "latin1.txt": (LATIN + "\n").encode("latin-1"),
        "cp1252.md": ("# Notes\n\n" + CP1252 + "\n").encode("cp1252"),
        "utf16le.txt": codecs_bom("utf-16-le") + WIDE.encode("utf-16-le"),
        "utf16be.txt": codecs_bom("utf-16-be") + WIDE.encode("utf-16-be"),
        "utf16-nobom.txt": ("BOM-less " + WIDE).encode("utf-16-le"),
        "utf8.txt": ("UTF-8 stays UTF-8: " + WIDE).encode(),
    }
    results = _ingest(conn, files)
    run_worker(make_settings(), db_url)
    docs = {name: _doc(conn, r.document_id) for name, r in results.items()}
    for name, doc in docs.items():
        assert doc["status"] == "complete", (name, doc["status"], doc["error_message"])
    assert docs["renamed.bin"]["mime_type"] == docs["report.docx"]["mime_type"]
    assert docs["report.docx"]["parser"].startswith("local-docx@")
    assert docs["deck.pptx"]["parser"].startswith("local-pptx@")

    texts = {name: _text(conn, r.document_id) for name, r in results.items()}
    for fragment in ("Quarterly report", "café owners included", "North | 10 | 12", "Closing"):
        assert fragment in texts["report.docx"]
    assert "header text" not in texts["report.docx"]
    for fragment in ("Launch plan", "Measure its memory", "Docs | 705"):
        assert fragment in texts["deck.pptx"]
    assert "speaker notes" not in texts["deck.pptx"]
    assert LATIN in texts["latin1.txt"]
    assert CP1252 in texts["cp1252.md"]
    for name in ("utf16le.txt", "utf16be.txt", "utf16-nobom.txt", "utf8.txt"):
        assert " ".join(WIDE.split()) in texts[name], name

    encodings = {
        name: _parsed_details(conn, r.document_id).get("encoding") for name, r in results.items()
    }
    assert encodings == {
        "report.docx": None,
        "deck.pptx": None,
        "renamed.bin": None,
        "latin1.txt": "cp1252",
        "cp1252.md": "cp1252",
        "utf16le.txt": "utf-16-le",
        "utf16be.txt": "utf-16-be",
        "utf16-nobom.txt": "utf-16-le",
        "utf8.txt": "utf-8",
    }


def codecs_bom(name: str) -> bytes:
    return "\ufeff".encode(name)


def test_binary_junk_and_a_docx_bomb_fail_on_the_first_attempt_saying_why(
    conn: Any, db_url: str, make_settings: Any, tmp_path: Path
) -> None:
    bomb = docx_bomb(tmp_path / "bomb.docx", 300 * 2**20).read_bytes()
    files = {
        "nul.txt": b"some text\x00\x00\x01\x02 then junk" * 50,
        "junk.dat": b"\x00\x01\x02\x03\xff\xfe\xfd" * 300,
        "bomb.docx": bomb,
        "truncated.docx": sample_docx()[:2000],
        "good.txt": b"a good document next to the bad ones\n",
    }
    results = _ingest(conn, files)
    assert len(bomb) < 2**20  # a small file that claims to be much bigger inside
    run_worker(make_settings(), db_url)
    docs = {name: _doc(conn, r.document_id) for name, r in results.items()}
    assert docs["good.txt"]["status"] == "complete"
    del docs["good.txt"]
    for name, doc in docs.items():
        assert (doc["status"], doc["error_class"]) == ("failed", "invalid_input"), name
        assert (doc["attempts"], _claims(conn, doc["id"])) == (1, 1), name
        assert "unsupported MIME type" not in doc["error_message"], name
    messages = {name: doc["error_message"] for name, doc in docs.items()}
    assert messages["nul.txt"] == "looks binary: NUL bytes at offset 9"
    assert "looks binary: NUL bytes at offset 0" in messages["junk.dat"]
    assert "word/document.xml" in messages["bomb.docx"]
    assert "ratio limit is 200:1" in messages["bomb.docx"]
    assert "DOCX is not a zip archive" in messages["truncated.docx"]
