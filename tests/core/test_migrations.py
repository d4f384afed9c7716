"""Migrations are idempotent and safe when processes race."""

from __future__ import annotations

import multiprocessing as mp

import psycopg

from shared.db.migrate import current_version, latest_version, migrate


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
        assert n_rows == latest_version()


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
