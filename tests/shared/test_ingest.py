"""Accepting documents: idempotency and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

from ingestd.shared.ingest import document_id_for


def test_reingesting_identical_bytes_creates_nothing(conn, ingest_bytes) -> None:
    first = ingest_bytes(b"same bytes", "a.txt")
    blobs_before = conn.execute("SELECT count(*) AS n FROM pg_largeobject_metadata").fetchone()["n"]
    second = ingest_bytes(b"same bytes", "b.txt")
    assert first.created and not second.created
    assert first.document_id == second.document_id
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM documents) AS docs,"
        " (SELECT count(*) FROM pg_largeobject_metadata) AS blobs,"
        " (SELECT count(*) FROM document_events) AS events"
    ).fetchone()
    assert counts == {"docs": 1, "blobs": blobs_before, "events": 1}


def test_document_id_is_derived_from_content(conn, ingest_bytes) -> None:
    import hashlib

    r = ingest_bytes(b"hello")
    assert r.document_id == document_id_for(hashlib.sha256(b"hello").hexdigest())


def test_bytes_are_stored_and_streamed_back(conn, ingest_bytes) -> None:
    from ingestd.shared.db.blobs import open_blob

    data = bytes(range(256)) * 9000  # > 2 MiB: several pieces
    doc = ingest_bytes(data, "x.bin").document_id
    row = conn.execute(
        "SELECT blob_oid, size_bytes FROM documents WHERE id = %s", (doc,)
    ).fetchone()
    reader = open_blob(conn, row["blob_oid"], row["size_bytes"])
    assert reader.read(10) == data[:10]
    reader.seek(1_500_000)
    assert reader.read(100_000) == data[1_500_000:1_600_000]
    reader.seek(0)
    assert reader.read(len(data) + 10) == data


def test_deleting_a_document_removes_its_bytes(conn, ingest_bytes) -> None:
    doc = ingest_bytes(b"to delete").document_id
    oid = conn.execute("SELECT blob_oid FROM documents WHERE id = %s", (doc,)).fetchone()[
        "blob_oid"
    ]
    conn.execute("DELETE FROM documents WHERE id = %s", (doc,))
    left = conn.execute(
        "SELECT count(*) AS n FROM pg_largeobject_metadata WHERE oid = %s", (oid,)
    ).fetchone()["n"]
    assert left == 0


def _ingestd(cli_env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_paths_give_clear_messages_not_tracebacks(conn, cli_env, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    good = tmp_path / "good.md"
    good.write_text("# Title\n\nSome text.\n")
    proc = _ingestd(
        cli_env,
        "ingest",
        "--json",
        str(tmp_path / "missing.txt"),
        str(empty),
        str(good),
        "/proc/self/mem",
    )
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    by_path = {line["path"]: line for line in lines}
    assert by_path[str(tmp_path / "missing.txt")]["status"] == "rejected"
    assert by_path[str(tmp_path / "missing.txt")]["error"] == "no such file or directory"
    assert by_path[str(empty)]["error"] == "file is empty"
    assert by_path[str(good)]["status"] == "queued" and by_path[str(good)]["document_id"]
    assert by_path["/proc/self/mem"]["status"] == "rejected"
    assert "cannot read file" in by_path["/proc/self/mem"]["error"]
    assert proc.returncode == 1, "rejections make the exit status non-zero"
    assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 1


def test_cli_ingests_a_directory_of_many_files(conn, cli_env, tmp_path) -> None:
    root = tmp_path / "many"
    for d in range(10):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(1000):
            (sub / f"f{i}.txt").write_text(f"file {d}/{i}\n")
    proc = _ingestd(cli_env, "ingest", "-q", str(root))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    n = conn.execute("SELECT count(*) AS n FROM documents WHERE status = 'queued'").fetchone()["n"]
    assert n == 10_000


def test_cli_bad_config_names_the_key(cli_env) -> None:
    env = {**cli_env, "INGESTD_WORKERS": "lots"}
    proc = _ingestd(env, "status", "--json")
    assert proc.returncode == 2
    assert "INGESTD_WORKERS" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_what_is_not_a_file_in_the_tree_and_keeps_the_rest(
    conn, cli_env, tmp_path
) -> None:
    """A FIFO blocked `open` forever, a link to /dev/zero filled the database, and a link
    out of the tree put /etc/passwd into the index; each is now refused on its own."""
    import os

    outside = tmp_path / "secret.txt"
    outside.write_text("not for the index\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.txt").write_text("kept\n")
    os.mkfifo(tree / "pipe.txt")
    (tree / "zero.txt").symlink_to("/dev/zero")
    named = tmp_path / "named-zero.txt"  # a path named on the command line is taken as given
    named.symlink_to("/dev/zero")
    (tree / "leak.txt").symlink_to(outside)
    (tree / "inner.txt").symlink_to(tree / "good.txt")  # inside the tree: followed

    proc = _ingestd(cli_env, "ingest", "--json", str(tree), str(named))

    assert "Traceback" not in proc.stderr
    by_name = {
        json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line)
        for line in proc.stdout.splitlines()
    }
    assert by_name["good.txt"]["status"] == "queued"
    assert by_name["inner.txt"]["document_id"] == by_name["good.txt"]["document_id"]
    assert by_name["pipe.txt"]["status"] == "rejected"
    assert by_name["pipe.txt"]["error"] == "not a regular file (a FIFO)"
    assert by_name["zero.txt"]["error"] == f"symlink leads outside {tree}"
    assert by_name["named-zero.txt"]["error"] == "not a regular file (a device)"
    assert by_name["leak.txt"]["error"] == f"symlink leads outside {tree}"
    assert proc.returncode == 1
    sources = [r["source"] for r in conn.execute("SELECT source FROM documents").fetchall()]
    assert sources == [str(tree / "good.txt")]
