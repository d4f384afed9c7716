"""Fixtures that start real services: PostgreSQL + pgvector, one database per xdist worker.

``INGESTD_DATABASE_URL``, when set, names the server to use (databases are
created on it); otherwise one embedded pgserver is shared by all xdist workers.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from ingestd.shared.db.connect import connect
from ingestd.shared.db.embedded import embedded_url
from ingestd.shared.db.migrate import migrate
from ingestd.shared.ingest import IngestResult, ingest_stream
from ingestd.shared.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent

# A metric name missing from the documented catalogue fails the test that emits it.
os.environ.setdefault("INGESTD_METRICS_STRICT", "1")


# Tiers: a test is `db` when it uses PostgreSQL (any fixture built on `pg_admin_url`), or says
# so with @pytest.mark.db when it reaches a server some other way (a subprocess that starts
# the embedded one). `pytest -m "not db"` is the fast tier; the guard below keeps it honest.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "pg_admin_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(autouse=True)
def _fast_tier_has_no_database(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test outside the `db` tier that opens a PostgreSQL connection fails, naming the fix."""
    if request.node.get_closest_marker("db"):
        return

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError(
            f"{request.node.nodeid} reaches PostgreSQL but is not marked db: "
            "use a database fixture or @pytest.mark.db"
        )

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(refuse))
    monkeypatch.setattr("pgserver.get_server", refuse)


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> str:
    configured = os.environ.get("INGESTD_TEST_ADMIN_URL") or os.environ.get("INGESTD_DATABASE_URL")
    if configured:
        return configured
    base = tmp_path_factory.getbasetemp()
    shared_root = base.parent if worker_id != "master" else base
    return embedded_url(shared_root / "pgserver-home")


def _db_url(admin_url: str, name: str) -> str:
    return conninfo.make_conninfo(admin_url, dbname=name)


def create_database(admin_url: str, name: str, *, migrated: bool = True) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _db_url(admin_url, name)
    if migrated:
        migrate(url)
    return url


@pytest.fixture(scope="session")
def db_url(pg_admin_url: str, worker_id: str) -> str:
    return create_database(pg_admin_url, f"ingestd_test_{worker_id}")


@pytest.fixture
def fresh_db_url(pg_admin_url: str) -> Callable[..., str]:
    def make(*, migrated: bool = False) -> str:
        return create_database(
            pg_admin_url, f"ingestd_t_{uuid.uuid4().hex[:12]}", migrated=migrated
        )

    return make


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """An autocommit connection to this xdist worker's database, emptied first."""
    c = connect(db_url, autocommit=True, application_name="ingestd-test")
    c.execute(
        "TRUNCATE documents, chunks, parsed_segments, document_events, webhook_deliveries,"
        " parse_results CASCADE"
    )
    c.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    c.execute("DELETE FROM ingestd_meta")
    # Each test fixes its own embedding space (dimension) on first use.
    c.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
    c.execute("ALTER TABLE chunks ALTER COLUMN embedding TYPE vector")
    c.execute("TRUNCATE worker_status, supervisor_status")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        env = {
            "INGESTD_HOME": str(tmp_path / "home"),
            "INGESTD_DATABASE_URL": db_url,
            "INGESTD_EMBEDDER": "hash",
        }
        return load_settings(environ=env, **overrides)

    return make


@pytest.fixture
def ingest_bytes(conn: psycopg.Connection[Any]) -> Callable[..., IngestResult]:
    def ingest(
        data: bytes, name: str = "doc.txt", mime_type: str | None = "text/plain"
    ) -> IngestResult:
        return ingest_stream(
            conn, io.BytesIO(data), source=f"test://{name}", filename=name, mime_type=mime_type
        )

    return ingest


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running ``ingestd`` as a real subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "OPENAI_"))}
    env.update(
        INGESTD_HOME=str(tmp_path / "home"),
        INGESTD_DATABASE_URL=db_url,
        INGESTD_EMBEDDER="hash",
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def openai_emulator() -> Iterator[Any]:
    """A real OpenAI embeddings emulator on a loopback port, in a background thread."""
    from tests.emulators.openai_api import OpenAIEmulator
    from tests.emulators.runner import running

    with running(OpenAIEmulator()) as api:
        yield api


@pytest.fixture
def openai_settings(
    make_settings: Callable[..., Settings],
    openai_emulator: Any,
) -> Callable[..., Settings]:
    """Settings for the ``openai`` embedder pointed at the emulator."""
    from tests.emulators.openai_api import DEFAULT_API_KEY

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("embedder", "openai")
        overrides.setdefault("embedding_dimensions", 256)
        overrides.setdefault("openai_api_key", DEFAULT_API_KEY)
        return make_settings(openai_base_url=openai_emulator.base_url, **overrides)

    return make
