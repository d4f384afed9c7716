"""Benchmarks' scratch databases are gone after their run, on either kind of server."""

from __future__ import annotations

from pathlib import Path

import psutil
import psycopg
import pytest

from profiling import scratch
from profiling.scratch import scratch_database


def _databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def test_a_database_on_a_given_server_is_migrated_then_dropped(pg_admin_url: str) -> None:
    before = _databases(pg_admin_url)
    with scratch_database(pg_admin_url, "unused-") as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        assert name not in before
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('chunks') IS NOT NULL").fetchone() == (True,)
    assert name not in _databases(pg_admin_url)


def test_a_database_is_dropped_when_the_run_fails(pg_admin_url: str) -> None:
    with pytest.raises(RuntimeError), scratch_database(pg_admin_url, "unused-") as url:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        raise RuntimeError("run failed")
    assert name not in _databases(pg_admin_url)


@pytest.mark.db  # starts an embedded server of its own
def test_an_embedded_server_is_stopped_and_its_files_deleted_after_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "server"
    home.mkdir()
    monkeypatch.setattr(scratch, "scratch_dir", lambda prefix: home)
    with scratch_database(None, "unused-") as url:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        pid = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not home.exists()  # deleted after the run, not left for the next runs' disk


def test_a_database_whose_migration_fails_is_not_left_behind(
    pg_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []

    def failing_migrate(url: str) -> None:
        created.append(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        assert created[0] in _databases(pg_admin_url)
        raise RuntimeError("migration failed")

    monkeypatch.setattr(scratch, "migrate", failing_migrate)
    with pytest.raises(RuntimeError, match="migration failed"):
        scratch.fresh_database(pg_admin_url)
    assert created and created[0] not in _databases(pg_admin_url)
