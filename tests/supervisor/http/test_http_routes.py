"""Every route over a real socket and a real database, each reply held to the OpenAPI
description; every error an RFC 9457 problem."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.shared.db import idempotency
from ingestd.shared.ingest import document_id_for
from ingestd.supervisor.http.uploads import IDEMPOTENCY_KEEP_SECONDS
from ingestd.supervisor.local_api import socket_path
from tests.emulators import running
from tests.supervisor.http.http_harness import (
    ADMIN_TOKEN,
    AppServer,
    add_token,
    multipart,
    request,
    snapshot,
)
from tests.supervisor.http.spec_check import conforms, problem
from tests.workers.support import run_worker

# How the server stores the harness admin token's Idempotency-Keys: each caller's own.
ADMIN_KEYS = f"token:{ADMIN_TOKEN.split('_')[1]}:"


@pytest.fixture
def api(make_settings, db_url, db):
    """The app with the local parser and the hash embedder, on TCP and the Unix socket."""
    with running(AppServer(make_settings(), db_url, local_socket=True)) as app:
        yield app


def _upload(url: str, data: bytes, name: str = "doc.txt", key: str | None = None):
    body, headers = multipart(data, name)
    if key is not None:
        headers["Idempotency-Key"] = key
    return request("POST", url + "/v1/documents", data=body, headers=headers)


def _all_rows_mentioning(db: Any, needle: str) -> dict[str, int]:
    """Rows of every table in the schema whose text form contains ``needle``."""
    tables = db.execute(
        "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = current_schema()"
    ).fetchall()
    found = {}
    for row in tables:
        n = db.execute(
            f"SELECT count(*) AS n FROM {row['t']} x WHERE x::text LIKE %s", (f"%{needle}%",)
        ).fetchone()["n"]
        if n:
            found[row["t"]] = n
    return found


# -- errors ------------------------------------------------------------------------------------


def test_unknown_routes_and_methods_are_problems(api) -> None:
    missing = request("GET", api.url + "/", headers={"X-Correlation-Id": "cid-1"})
    body = problem(missing, 404)
    assert body["correlation_id"] == "cid-1" and body["title"] == "Not Found"
    problem(request("GET", api.url + "/v1/nothing/here"), 404)
    wrong = request("PUT", api.url + "/v1/status")
    problem(wrong, 405)
    assert wrong.headers["Allow"] == "GET"
    problem(request("PATCH", api.url + "/v1/documents"), 405)


def test_a_malformed_request_line_is_a_problem_too(api) -> None:
    host, port = api.url.removeprefix("http://").split(":")

    async def raw() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    answer = asyncio.run(raw())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    assert b'"status":400' in body.replace(b" ", b"") and b"malformed HTTP request" in body


def test_openapi_is_served_and_matches_the_module(api) -> None:
    from ingestd.supervisor.http.openapi import SPEC

    reply = request("GET", api.url + "/v1/openapi.json")
    assert conforms(reply, "GET", "/v1/openapi.json") == SPEC


# -- uploads -------------------------------------------------------------------------------------


def test_upload_201_has_a_location_and_a_duplicate_is_200(api, db) -> None:
    data = b"%PDF-1.4 not really, but the bytes say PDF\n"
    first = _upload(api.url, data, "named-as-text.txt")
    body = conforms(first, "POST", "/v1/documents")
    assert (
        first.status == 201 and first.headers["Location"] == f"/v1/documents/{body['document_id']}"
    )
    # Sniffed from the bytes, not from the name.
    mime = db.execute("SELECT mime_type FROM documents WHERE id = %s", (body["document_id"],))
    assert mime.fetchone()["mime_type"] == "application/pdf"
    shown = request("GET", api.url + first.headers["Location"])
    assert (
        conforms(shown, "GET", "/v1/documents/{document_id}")["document"]["id"]
        == body["document_id"]
    )
    again = _upload(api.url, data, "other.txt")
    assert again.status == 200 and "Location" not in again.headers
    assert conforms(again, "POST", "/v1/documents") == {**body, "created": False}


def test_upload_refusals_are_problems(api, db) -> None:
    before = snapshot(db)
    conforms(problem(_upload(api.url, b""), 422) and _upload(api.url, b""), "POST", "/v1/documents")
    raw = request(
        "POST", api.url + "/v1/documents", data=b"x", headers={"Content-Type": "text/plain"}
    )
    conforms(raw, "POST", "/v1/documents")
    problem(raw, 415)
    broken = request(
        "POST",
        api.url + "/v1/documents",
        data=b"--nope\r\nnot a part",
        headers={"Content-Type": f"multipart/form-data; boundary={uuid.uuid4().hex}"},
    )
    problem(broken, 400)
    assert snapshot(db) == before


def test_idempotency_key_replays_the_first_answer(api, db) -> None:
    data = b"idempotent upload\n" * 100
    first = _upload(api.url, data, key="key-1")
    assert first.status == 201 and "Idempotent-Replayed" not in first.headers
    # The same key and bytes: the kept answer, 201 and Location included.
    again = _upload(api.url, data, "renamed.txt", key='"key-1"')
    assert again.status == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.headers["Location"] == first.headers["Location"]
    before = snapshot(db)
    # The same key, other bytes: refused, and nothing of them stored.
    other = _upload(api.url, b"different bytes", key="key-1")
    assert "different file" in problem(other, 422)["detail"]
    assert snapshot(db) == before
    # A key sent with the same bytes as an earlier keyless upload: 200, and kept too.
    keyless = _upload(api.url, b"first without a key")
    assert keyless.status == 201
    keyed = _upload(api.url, b"first without a key", key="key-2")
    assert keyed.status == 200 and keyed.json()["document_id"] == keyless.json()["document_id"]
    kept = db.execute(
        "SELECT key, status_code, request_sha256, expires_at - created_at AS keep"
        " FROM idempotency_keys ORDER BY key"
    ).fetchall()
    assert [(r["key"], r["status_code"]) for r in kept] == [
        (ADMIN_KEYS + "key-1", 201),
        (ADMIN_KEYS + "key-2", 200),
    ]
    assert kept[0]["request_sha256"] == hashlib.sha256(data).hexdigest()
    assert kept[0]["keep"].total_seconds() == IDEMPOTENCY_KEEP_SECONDS


def test_idempotency_keys_are_each_callers_own(api, db) -> None:
    other = "ingestd_00000000beef_" + "another-callers-secret".ljust(43, "y")
    add_token(db, other, scope="write", name="other-caller")
    mine = _upload(api.url, b"my bytes", key="shared-key")
    assert mine.status == 201
    body, headers = multipart(b"their bytes", "theirs.txt")
    headers["Idempotency-Key"] = "shared-key"
    theirs = request("POST", api.url + "/v1/documents", data=body, headers=headers, token=other)
    # Neither a replay of my answer (it names my document) nor a 422 for "other bytes".
    assert theirs.status == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["document_id"] != mine.json()["document_id"]


def test_idempotency_key_in_progress_conflicts_and_a_failed_upload_frees_it(api, db) -> None:
    held = idempotency.claim(db, ADMIN_KEYS + "busy", keep_seconds=60, stale_seconds=600)
    assert held is None  # claimed here, as a running request would have
    before = snapshot(db)
    problem(_upload(api.url, b"while busy", key="busy"), 409)
    assert snapshot(db) == before
    # A refused upload keeps no record: the same key works once the file is right.
    problem(_upload(api.url, b"", key="retry-me"), 422)
    assert _upload(api.url, b"now with content", key="retry-me").status == 201
    problem(_upload(api.url, b"x", key="bad key with spaces"), 400)
    problem(_upload(api.url, b"x", key="k" * 256), 400)


# -- listing --------------------------------------------------------------------------------------


def test_paging_walks_every_document_exactly_once(api, db, ingest_bytes) -> None:
    ids = {str(ingest_bytes(f"document {i}".encode(), f"d{i}.txt").document_id) for i in range(13)}
    failed = sorted(ids)[:4]
    db.execute(
        "UPDATE documents SET status = 'failed', error_class = 'invalid_input'"
        " WHERE id = ANY(%s::uuid[])",
        (failed,),
    )

    @settings(
        max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(limit=st.integers(1, 15), status=st.sampled_from([None, "queued", "failed"]))
    def walk(limit: int, status: str | None) -> None:
        seen: list[str] = []
        query = f"?limit={limit}" + (f"&status={status}" if status else "")
        url: str | None = api.url + "/v1/documents" + query
        pages = 0
        while url is not None:
            reply = request("GET", url)
            page = conforms(reply, "GET", "/v1/documents")
            assert len(page["documents"]) <= limit
            seen += [d["id"] for d in page["documents"]]
            assert all(status is None or d["status"] == status for d in page["documents"])
            url = api.url + page["next"] if page["next"] else None
            if url is not None:
                assert reply.headers["Link"] == f'<{page["next"]}>; rel="next"'
            pages += 1
        expected = {None: ids, "failed": set(failed), "queued": ids - set(failed)}[status]
        assert len(seen) == len(set(seen)) and set(seen) == expected
        # One row past the page tells whether another exists: no empty last page.
        assert pages == max(1, -(-len(expected) // limit))

    walk()


def test_listing_refuses_bad_queries(api) -> None:
    for query in (
        "limit=0",
        "limit=501",
        "limit=x",
        "status=nope",
        "cursor=garbage!",
        "cursor=e30",
    ):
        reply = request("GET", f"{api.url}/v1/documents?{query}")
        conforms(reply, "GET", "/v1/documents")
        problem(reply, 400)


# -- retry, delete ---------------------------------------------------------------------------------


def test_retry_requeues_only_failed_or_dead_documents(api, db, ingest_bytes) -> None:
    doc_id = str(ingest_bytes(b"will fail", "f.txt").document_id)
    path = "/v1/documents/{document_id}/retry"
    queued = request("POST", f"{api.url}/v1/documents/{doc_id}/retry")
    conforms(queued, "POST", path)
    assert problem(queued, 409)["document_status"] == "queued"
    db.execute("UPDATE documents SET status = 'dead', attempts = 5 WHERE id = %s", (doc_id,))
    reply = request("POST", f"{api.url}/v1/documents/{doc_id[:8]}/retry")
    assert conforms(reply, "POST", path) == {"document_id": doc_id, "status": "queued"}
    row = db.execute("SELECT status, attempts FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert (row["status"], row["attempts"]) == ("queued", 0)
    problem(request("POST", f"{api.url}/v1/documents/{uuid.uuid4()}/retry"), 404)


def test_delete_leaves_nothing_of_the_document(api, db, make_settings, db_url) -> None:
    data = b"# Title\n\n" + b"A paragraph to chunk and embed. " * 200
    up = _upload(api.url, data, "gone.md", key="delete-me")
    doc_id = up.json()["document_id"]
    kept = _upload(api.url, b"# Other\n\nThis one stays.", "stays.md").json()["document_id"]
    run_worker(make_settings(), db_url)
    statuses = db.execute("SELECT status FROM documents").fetchall()
    assert {r["status"] for r in statuses} == {"complete"}
    assert db.execute(
        "SELECT count(*) AS n FROM chunks WHERE document_id = %s", (doc_id,)
    ).fetchone()["n"]
    sha = hashlib.sha256(data).hexdigest()
    assert _all_rows_mentioning(db, doc_id)  # documents, chunks, segments, events, the key
    blobs = db.execute("SELECT count(*) AS n FROM pg_largeobject_metadata").fetchone()["n"]

    reply = request("DELETE", f"{api.url}/v1/documents/{doc_id}")
    assert conforms(reply, "DELETE", "/v1/documents/{document_id}") == {
        "document_id": doc_id,
        "deleted": True,
    }
    assert _all_rows_mentioning(db, doc_id) == {}
    assert _all_rows_mentioning(db, sha) == {}
    assert (
        db.execute("SELECT count(*) AS n FROM pg_largeobject_metadata").fetchone()["n"] == blobs - 1
    )
    assert _all_rows_mentioning(db, kept)  # the other document is untouched
    problem(request("DELETE", f"{api.url}/v1/documents/{doc_id}"), 404)
    problem(request("GET", f"{api.url}/v1/documents/{doc_id}"), 404)
    # Its key went with it: the same key and bytes make a new document.
    assert _upload(api.url, data, key="delete-me").status == 201


# -- search ----------------------------------------------------------------------------------------


def test_search_finds_the_document_and_the_cli_asks_the_daemon(
    api, db, make_settings, db_url, cli_env
) -> None:
    texts = {
        "bread.md": b"# Bread\n\nKnead the dough and let it rise before baking.",
        "chess.md": b"# Chess\n\nThe Sicilian Defence answers e4 with c5.",
    }
    ids = {name: _upload(api.url, data, name).json()["document_id"] for name, data in texts.items()}
    empty = request("GET", api.url + "/v1/search?q=anything")
    assert conforms(empty, "GET", "/v1/search")["results"] == []  # nothing embedded yet
    run_worker(make_settings(), db_url)
    reply = request("GET", api.url + "/v1/search?q=Knead+the+dough+and+let+it+rise&k=2")
    body = conforms(reply, "GET", "/v1/search")
    assert body["k"] == 2 and len(body["results"]) == 2
    assert body["results"][0]["document_id"] == ids["bread.md"]
    for query in ("", "k=3", "q=x&k=0", "q=x&k=101", "q=x&k=two", "q=" + "x" * 2001):
        bad = request("GET", f"{api.url}/v1/search?{query}")
        conforms(bad, "GET", "/v1/search")
        problem(bad, 400)

    sock = socket_path(api.settings)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock).st_mode)
    proc = _cli(cli_env, "search", "--json", "-k", "1", "Knead the dough and let it rise")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # answered by the daemon: no fallback note
    assert [__import__("json").loads(line)["document_id"] for line in proc.stdout.splitlines()] == [
        ids["bread.md"]
    ]
    refused = _cli(cli_env, "search", "-k", "1", "x" * 2001)
    assert refused.returncode == 2 and "refused the search (400)" in refused.stderr


def test_cli_search_without_a_daemon_embeds_itself_and_says_so_when_asked(db, cli_env) -> None:
    quiet = _cli(cli_env, "search", "--json", "anything")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # the answer is the output; how it was found is a log line
    told = _cli(cli_env, "-v", "search", "--json", "anything")
    assert told.returncode == 0, told.stderr
    assert "no daemon on the local socket; embedding the query in this process" in told.stderr


def _cli(env: dict[str, str], *args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_document_ids_derive_from_content(api) -> None:
    reply = _upload(api.url, b"derived")
    assert reply.json()["document_id"] == str(
        document_id_for(hashlib.sha256(b"derived").hexdigest())
    )
