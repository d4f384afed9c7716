"""Many files at once (``ingest_files``, what ``ingestd ingest`` runs): the same documents,
events and answers as ingesting the files one by one, a bad file refused alone, large
files still streamed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from unittest.mock import patch

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestd.shared import ingest
from ingestd.shared.db import jobs
from ingestd.shared.db.blobs import open_blob
from ingestd.shared.db.connect import connect
from ingestd.shared.ingest import (
    SMALL_FILE_BYTES,
    IngestResult,
    document_id_for,
    ingest_file,
    ingest_files,
)
from tests.polling import wait_until

MB = 1 << 20


def _batch(conn: Any, paths: list[Path]) -> list[IngestResult]:
    with conn.transaction():
        return ingest_files(conn, [(p, None) for p in paths])


def _stored(conn: Any) -> dict[str, Any]:
    """Everything an ingest leaves, without what differs by design between two runs
    (correlation ids, object ids, times)."""
    docs = conn.execute(
        "SELECT id, content_sha256, source, filename, mime_type, size_bytes, status::text,"
        " lo_get(blob_oid) AS data FROM documents ORDER BY id"
    ).fetchall()
    events = conn.execute(
        "SELECT e.document_id, e.event, e.to_status::text, e.attempt, e.details,"
        " e.correlation_id = d.correlation_id AS same_correlation"
        " FROM document_events e JOIN documents d ON d.id = e.document_id"
        " ORDER BY e.document_id, e.id"
    ).fetchall()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM pg_largeobject_metadata) AS n_blobs,"
        " (SELECT count(*) FROM documents) AS n_docs"
    ).fetchone()
    return {"docs": docs, "events": events, **counts}


def _empty(conn: Any) -> None:
    conn.execute("TRUNCATE documents, document_events CASCADE")
    conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")


def test_a_batch_stores_what_one_by_one_stores(conn, tmp_path) -> None:
    paths = []
    for i in range(30):
        p = tmp_path / f"f{i:02d}.md"
        p.write_text(f"# Doc {i % 20}\n\nbody {i % 20}\n")  # the last ten repeat the first
        paths.append(p)
    results = _batch(conn, paths)

    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.created for r in results] == [True] * 20 + [False] * 10
    assert {r.status for r in results} == {"queued"}
    assert [r.document_id for r in results[20:]] == [r.document_id for r in results[:10]]
    stored = _stored(conn)
    assert stored["docs"][0]["mime_type"] == "text/markdown"
    assert {d["source"] for d in stored["docs"]} == {str(p) for p in paths[:20]}
    by_id = {d["id"]: d for d in stored["docs"]}
    for p, r in zip(paths[:20], results, strict=False):
        data = p.read_bytes()
        assert r.document_id == document_id_for(hashlib.sha256(data).hexdigest())
        assert bytes(by_id[r.document_id]["data"]) == data
        assert by_id[r.document_id]["size_bytes"] == len(data)
    assert stored["n_blobs"] == stored["n_docs"] == 20
    assert [e["event"] for e in stored["events"]] == ["ingested"] * 20
    assert all(e["same_correlation"] and e["attempt"] == 0 for e in stored["events"])
    one = stored["events"][0]
    assert one["details"] == {
        "size_bytes": by_id[one["document_id"]]["size_bytes"],
        "mime_type": "text/markdown",
        "source": by_id[one["document_id"]]["source"],
    }


def test_ingesting_twice_finds_every_file_and_writes_nothing(conn, tmp_path) -> None:
    paths = [tmp_path / f"{i}.txt" for i in range(50)]
    for i, p in enumerate(paths):
        p.write_bytes(f"text {i}\n".encode() * (i + 1))
    first = _batch(conn, paths)
    conn.execute("UPDATE documents SET status = 'parsing' WHERE id = %s", (first[3].document_id,))
    before = _stored(conn)
    again = _batch(conn, paths)
    assert [r.document_id for r in again] == [r.document_id for r in first]
    assert not any(r.created for r in again)
    assert again[3].status == "parsing"
    assert {r.status for i, r in enumerate(again) if i != 3} == {"queued"}
    assert _stored(conn) == before


def test_bad_files_are_refused_alone_and_leave_nothing(conn, tmp_path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("good\n")
    other = tmp_path / "other.txt"
    other.write_text("other\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    badly_named = Path(os.fsdecode(bytes(tmp_path) + b"/\xff.txt"))
    badly_named.write_text("a name that is not UTF-8\n")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SMALL_FILE_BYTES + 1))
    entries = [
        (good, None),
        (tmp_path / "vanished.txt", None),  # listed, then deleted before it was opened
        (Path("/proc/self/mem"), None),  # opens, then every read fails
        (fifo, None),
        (tmp_path, None),
        (empty, None),
        (badly_named, None),
        (tmp_path / "listed-as-bad.txt", "symlink leads outside somewhere"),
        (big, None),
        (other, None),
    ]
    with conn.transaction():
        results = ingest_files(conn, entries)

    assert [(r.status, r.error) for r in results] == [
        ("queued", None),
        ("rejected", "no such file"),
        ("rejected", "cannot read file: Input/output error"),
        ("rejected", "not a regular file (a FIFO)"),
        ("rejected", "is a directory"),
        ("rejected", "file is empty"),
        ("rejected", "file name is not valid UTF-8"),
        ("rejected", "symlink leads outside somewhere"),
        ("queued", None),
        ("queued", None),
    ]
    stored = _stored(conn)
    assert {d["filename"] for d in stored["docs"]} == {"good.txt", "big.bin", "other.txt"}
    assert stored["n_blobs"] == 3


def test_a_file_whose_size_says_nothing_is_read_to_its_end(conn) -> None:
    """procfs reports size 0 for files that have content: the size is a hint only."""
    proc = Path("/proc/self/status")
    (result,) = _batch(conn, [proc])
    assert result.status == "queued"
    size = conn.execute(
        "SELECT size_bytes FROM documents WHERE id = %s", (result.document_id,)
    ).fetchone()["size_bytes"]
    assert size > 100


@pytest.mark.parametrize("size", [SMALL_FILE_BYTES, SMALL_FILE_BYTES + 1, 3 * MB + 5])
def test_either_side_of_the_threshold_the_same_bytes_are_stored(conn, tmp_path, size) -> None:
    path = tmp_path / "x.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    (result,) = _batch(conn, [path])
    row = conn.execute(
        "SELECT blob_oid, size_bytes, content_sha256 FROM documents WHERE id = %s",
        (result.document_id,),
    ).fetchone()
    assert row["size_bytes"] == size
    assert row["content_sha256"] == hashlib.sha256(data).hexdigest()
    assert open_blob(conn, row["blob_oid"], size).read() == data


@pytest.mark.limit_memory("12 MB")
def test_a_large_file_is_streamed_not_held(conn, tmp_path, request) -> None:
    assert request.config.pluginmanager.get_plugin("memray_manager") is not None, (
        "pytest-memray is not active: the limit would not be checked"
    )
    path = tmp_path / "big.txt"
    with path.open("wb") as fh:
        for i in range(40):
            fh.write(bytes([65 + i % 26]) * MB)
    (result,) = _batch(conn, [path])
    assert result.status == "queued"


@pytest.mark.limit_memory("32 MB")
def test_small_files_are_written_in_bounded_batches(conn, tmp_path, request) -> None:
    """64 MB of files just under the threshold: held all at once (with their encoded
    copy) they would be ~130 MB; batches of 4 MB keep the command to about five times that."""
    assert request.config.pluginmanager.get_plugin("memray_manager") is not None
    paths = []
    for i in range(64):
        p = tmp_path / f"{i:03d}.bin"
        p.write_bytes(bytes([i]) * (SMALL_FILE_BYTES - 1))
        paths.append(p)
    results = _batch(conn, paths)
    assert sum(r.created for r in results) == 64


def test_losing_a_race_for_the_same_content_leaves_no_object_behind(conn, db_url) -> None:
    """Another session stores the same bytes first and commits while this statement waits
    on the unique index: the object this statement made is removed, the answer is the
    other's document."""
    data = b"raced bytes\n"
    sha = hashlib.sha256(data).hexdigest()

    def doc() -> jobs.NewDocument:
        import uuid

        return jobs.NewDocument(
            document_id_for(sha), sha, "test://race", "race.txt", "text/plain", data, uuid.uuid4()
        )

    winner = connect(db_url, application_name="ingestd-test-winner")
    loser = connect(db_url, autocommit=True, application_name="ingestd-test-loser")
    try:
        assert jobs.add_small_documents(winner, [doc()]) == {sha: (True, "queued")}
        answer: dict[str, Any] = {}

        def lose() -> None:
            with loser.transaction():
                answer.update(jobs.add_small_documents(loser, [doc()]))

        thread = threading.Thread(target=lose)
        thread.start()
        wait_until(
            lambda: conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'ingestd-test-loser'"
                " AND wait_event_type = 'Lock'"
            ).fetchone(),
            "the second writer to wait on the first",
            timeout=30,
        )
        winner.commit()
        thread.join(30)
        assert answer == {sha: (False, "queued")}
    finally:
        winner.close()
        loser.close()
    stored = _stored(conn)
    assert stored["n_blobs"] == stored["n_docs"] == 1


_CONTENTS = st.lists(st.binary(min_size=0, max_size=90), min_size=1, max_size=6, unique=True)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    contents=_CONTENTS,
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=14),
    stored_first=st.sets(st.integers(0, 5), max_size=3),
    small_limit=st.sampled_from([8, 48, SMALL_FILE_BYTES]),
    batch_bytes=st.sampled_from([1, 100, 8 * MB]),
)
def test_any_mix_gives_what_one_by_one_gives(
    conn: psycopg.Connection[Any],
    contents: list[bytes],
    picks: list[int],
    stored_first: set[int],
    small_limit: int,
    batch_bytes: int,
) -> None:
    """Files (some the same bytes, some already stored, some empty, small or streamed,
    in batches of any size): the answers and what is stored are those of ``ingest_file``
    on each file in turn."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = []
        for n, pick in enumerate(picks):
            p = root / f"{n:02d}-{pick}.txt"
            p.write_bytes(contents[pick % len(contents)])
            paths.append(p)
        earlier = []
        for i in sorted(stored_first):
            p = root / f"earlier-{i}.txt"
            p.write_bytes(contents[i % len(contents)])
            earlier.append(p)

        def run(many: bool) -> tuple[list[IngestResult], dict[str, Any]]:
            _empty(conn)
            for p in earlier:
                ingest_file(conn, p)
            if many:
                with (
                    patch.object(ingest, "SMALL_FILE_BYTES", small_limit),
                    patch.object(ingest, "BATCH_BYTES", batch_bytes),
                ):
                    results = _batch(conn, paths)
            else:
                results = [ingest_file(conn, p) for p in paths]
            return results, _stored(conn)

        one_by_one = run(many=False)
        together = run(many=True)
    assert together[0] == one_by_one[0]
    assert together[1] == one_by_one[1]
    assert together[1]["n_blobs"] == together[1]["n_docs"]


def test_cli_output_is_the_same_and_a_second_run_finds_everything(conn, cli_env, tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    for i in range(450):  # more than one group of 200
        (root / "sub" / f"{i:03d}.txt").write_text(f"file {i % 400}\n")
    (root / "z-empty.txt").write_bytes(b"")

    def ingest_json() -> tuple[int, list[dict[str, Any]]]:
        proc = subprocess.run(
            [sys.executable, "-m", "ingestd.supervisor.cli", "ingest", "--json", str(root)],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "Traceback" not in proc.stderr
        return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]

    code, first = ingest_json()
    assert code == 1  # the empty file
    files = sorted(str(p) for p in (root / "sub").iterdir())
    assert [r["path"] for r in first] == [str(root / "z-empty.txt"), *files]  # walk order
    assert sum(r["created"] for r in first) == 400
    assert first.pop(0) == {
        "path": str(root / "z-empty.txt"),
        "document_id": None,
        "status": "rejected",
        "created": False,
        "error": "file is empty",
    }
    assert first[400]["document_id"] == first[0]["document_id"]
    assert (first[400]["created"], first[400]["status"]) == (False, "queued")

    code, again = ingest_json()
    assert code == 1
    assert [r["document_id"] for r in again[1:]] == [r["document_id"] for r in first]
    assert not any(r["created"] for r in again)
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM documents) AS docs,"
        " (SELECT count(*) FROM document_events) AS events,"
        " (SELECT count(*) FROM pg_largeobject_metadata) AS blobs"
    ).fetchone()
    assert counts == {"docs": 400, "events": 400, "blobs": 400}

    proc = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "ingest", str(root / "sub")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0
    assert lines[0] == f"exists (queued){first[0]['document_id']}  {root / 'sub' / '000.txt'}"


def test_the_source_is_the_resolved_path(conn, tmp_path, monkeypatch) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.txt").write_text("a\n")
    (real / "b.txt").write_text("b\n")
    (tmp_path / "via").symlink_to(real)
    (real / "link.txt").symlink_to(real / "b.txt")
    monkeypatch.chdir(tmp_path)
    paths = [Path("via/a.txt"), tmp_path / "via" / "link.txt"]
    results = _batch(conn, paths)
    sources = [
        conn.execute("SELECT source FROM documents WHERE id = %s", (r.document_id,)).fetchone()[
            "source"
        ]
        for r in results
    ]
    assert sources == [str(real / "a.txt"), str(real / "b.txt")]
    assert [r.path for r in results] == ["via/a.txt", str(tmp_path / "via" / "link.txt")]
