"""Migrations are idempotent and safe when processes race."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import psycopg

from ingestd.shared.db.chunks import ChunkRow, copy_embedded_many
from ingestd.shared.db.connect import connect
from ingestd.shared.db.migrate import available, current_version, latest_version, migrate
from ingestd.shared.ingest import ingest_file


def test_migrate_twice_is_a_no_op(fresh_db_url) -> None:
    url = fresh_db_url()
    first = migrate(url)
    assert first and first[-1] == latest_version()
    assert migrate(url) == []
    with psycopg.connect(url) as c:
        assert current_version(c) == latest_version()


def _migrate_in_child(url: str, barrier, out) -> None:
    barrier.wait()
    try:
        out.put(("ok", migrate(url)))
    except Exception as exc:  # the test asserts on this
        out.put(("error", repr(exc)))


def test_concurrent_migrations_apply_exactly_once(fresh_db_url) -> None:
    url = fresh_db_url()
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_migrate_in_child, args=(url, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(kind == "ok" for kind, _ in results), results
    applied = [versions for _, versions in results if versions]
    assert len(applied) == 1, "exactly one process applies the migrations"
    with psycopg.connect(url) as c:
        n_rows = c.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        # One row per migration (numbers are assigned per branch, so they may have gaps).
        assert n_rows == len(available())


def test_parsed_text_is_stored_uncompressed(fresh_db_url) -> None:
    # pglz on every parsed segment was the parse stage's largest PostgreSQL cost;
    # see migration 0005 for the disk it trades for that.
    url = fresh_db_url()
    migrate(url)
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT attstorage FROM pg_attribute"
            " WHERE attrelid = 'parsed_segments'::regclass AND attname = 'text'"
        ).fetchone()
    assert row == ("e",)


def _toast_bytes(c: psycopg.Connection) -> int:
    row = c.execute(
        "SELECT pg_relation_size(reltoastrelid) AS n FROM pg_class WHERE oid = 'chunks'::regclass"
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_vectors_that_fit_a_page_stay_in_the_row_and_larger_ones_go_to_toast(
    fresh_db_url, tmp_path
) -> None:
    url = fresh_db_url()
    migrate(url)
    rng = np.random.default_rng(7)
    small = rng.standard_normal((3, 1536)).astype(np.float32)
    large = rng.standard_normal((1, 3072)).astype(np.float32)
    doc = tmp_path / "doc.txt"
    doc.write_text("a document for the chunks' foreign key")
    with connect(url, autocommit=True) as c:
        doc_id = ingest_file(c, doc).document_id
        assert doc_id is not None
        rows = [(doc_id, ChunkRow(i, f"chunk {i} " * 50, 100)) for i in range(4)]
        with c.transaction():
            copy_embedded_many(c, "test", 1, "m", rows[:3], small)
        assert _toast_bytes(c) == 0  # 6 KB vectors: in the row
        with c.transaction():
            copy_embedded_many(c, "test", 1, "m", rows[3:], large)
        assert _toast_bytes(c) > 0  # 12 KB: out of line, as PostgreSQL must
        stored = c.execute(
            "SELECT embedding::real[] AS e FROM chunks WHERE document_id = %s ORDER BY ordinal",
            (doc_id,),
        ).fetchall()
    assert [np.array(r["e"], dtype=np.float32).tolist() for r in stored] == [
        *small.tolist(),
        *large.tolist(),
    ]
