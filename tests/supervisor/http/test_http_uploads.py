"""POST /v1/documents: streamed into a large object, bounded, idempotent by content."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from ingestd.shared.ingest import document_id_for
from tests.emulators import running
from tests.supervisor.http.http_harness import AppServer, multipart, request, snapshot, zeros


def _upload(url: str, data: bytes, filename: str = "doc.txt", field: str = "file"):
    body, headers = multipart(data, filename, field=field)
    return request("POST", url + "/v1/documents", data=body, headers=headers)


@pytest.fixture
def small_server(make_settings, db_url, db):
    """The app with a 1 MiB upload limit."""
    with running(AppServer(make_settings(max_upload_mb=1), db_url)) as app:
        yield app


def test_upload_stores_the_bytes_and_a_duplicate_returns_the_same_document(server, db) -> None:
    # Several pieces long, and not a multiple of the piece size.
    data = os.urandom(8) + b"hello upload\n" * 250_000
    reply = _upload(server.url, data, "../../etc/a.txt")
    assert reply.status == 201, reply.body
    body = reply.json()
    sha = hashlib.sha256(data).hexdigest()
    assert body == {"document_id": str(document_id_for(sha)), "status": "queued", "created": True}
    row = db.execute(
        "SELECT filename, source, size_bytes, content_sha256, lo_get(blob_oid) AS data"
        " FROM documents WHERE id = %s",
        (body["document_id"],),
    ).fetchone()
    assert row["filename"] == "a.txt"  # the path the client sent is not kept
    assert row["source"] == "upload:a.txt"
    assert (row["size_bytes"], row["content_sha256"], bytes(row["data"])) == (len(data), sha, data)

    before = snapshot(db)
    again = _upload(server.url, data, "other-name.txt")
    assert again.status == 200
    expected = {"document_id": body["document_id"], "status": "queued", "created": False}
    assert again.json() == expected
    assert snapshot(db) == before  # no second row, no orphaned large object


def test_upload_over_the_limit_is_refused_and_leaves_nothing(small_server, db) -> None:
    before = snapshot(db)
    url = small_server.url + "/v1/documents"
    # Streamed without a Content-Length: refused once the count passes 1 MiB.
    head, headers = multipart(b"", "big.bin")
    boundary = headers["Content-Type"].split("boundary=")[1]
    prefix = head[: head.index(b"\r\n\r\n", head.index(b'name="file"')) + 4]
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = zeros(3 << 20)

    async def chunked():
        yield prefix
        async for piece in body():
            yield piece
        yield tail

    reply = request("POST", url, data=chunked, headers=headers)
    assert reply.status == 413, reply.body
    assert "max_upload_mb" in reply.json()["detail"]
    assert snapshot(db) == before
    # Declared too large: refused before a byte of it is read.
    assert _upload(small_server.url, b"x" * ((1 << 20) + 100_000)).status == 413
    assert snapshot(db) == before
    # Just under the limit is fine.
    assert _upload(small_server.url, b"y" * ((1 << 20) - 10)).status == 201


def test_upload_refusals(server, db) -> None:
    before = snapshot(db)
    empty = _upload(server.url, b"")
    assert empty.status == 422 and "empty" in empty.json()["detail"]
    no_file = _upload(server.url, b"data", field="document")
    assert no_file.status == 400 and "file" in no_file.json()["detail"]
    raw = request(
        "POST", server.url + "/v1/documents", data=b"raw", headers={"Content-Type": "text/plain"}
    )
    assert raw.status == 415
    broken = request(
        "POST",
        server.url + "/v1/documents",
        data=b"--nope\r\nnot a part",
        headers={"Content-Type": f"multipart/form-data; boundary={uuid.uuid4().hex}"},
    )
    assert broken.status == 400
    assert snapshot(db) == before


@pytest.mark.parametrize("sent", ["esc\x1b]0;PWNED-TITLE\x07\x1b[2Jname.txt", "nul\x00byte.txt"])
def test_a_raw_control_character_in_a_part_header_is_a_400_not_a_500(server, db, sent) -> None:
    before = snapshot(db)
    reply = _upload(server.url, b"some text", sent)
    assert reply.status == 400, reply.body
    assert "malformed multipart body" in reply.json()["detail"]
    assert snapshot(db) == before


def test_control_characters_in_an_encoded_file_name_are_dropped(server, db) -> None:
    """RFC 5987 lets a client send any character percent-encoded; none reaches a terminal."""
    body, headers = multipart(b"named with escapes", "x.txt")
    body = body.replace(
        b'filename="x.txt"', b"filename*=UTF-8''esc%1B%5D0%3BPWNED%07%1B%5B2Jname.txt"
    )
    reply = request("POST", server.url + "/v1/documents", data=body, headers=headers)
    assert reply.status == 201, reply.body
    row = db.execute(
        "SELECT filename FROM documents WHERE id = %s", (reply.json()["document_id"],)
    ).fetchone()
    assert row["filename"] == "esc]0;PWNED[2Jname.txt"
