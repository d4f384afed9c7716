"""Fixtures of the chaos suite: a scenario's world (``scene``), a module's corpus and its
fault-free reference run, and the invariant check every scenario ends with."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import conninfo

from tests.chaos import invariants, results
from tests.chaos.corpus import write_corpus
from tests.chaos.daemon import (
    API_KEY,
    DB_PASSWORD,
    FAST_ENV,
    ROOT,
    WEBHOOK_SECRET,
    Scene,
)
from tests.conftest import create_database

SECRETS = (API_KEY, WEBHOOK_SECRET, DB_PASSWORD)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controlling process, not an xdist worker
        results.reset()


def make_scene(admin_url: str, where: Path, name: str) -> Scene:
    url = create_database(admin_url, f"ingestd_chaos_{uuid.uuid4().hex[:10]}")
    # Trust authentication ignores it; it is there to be looked for in every log line.
    url = conninfo.make_conninfo(url, password=DB_PASSWORD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "OPENAI_"))}
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        env.pop(var, None)
    where.mkdir(parents=True, exist_ok=True)
    env.update(
        FAST_ENV,
        PYTHONPATH=str(ROOT),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        INGESTD_HOME=str(where / "home"),
        INGESTD_DATABASE_URL=url,
        OPENAI_API_KEY=API_KEY,
        INGESTD_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    return Scene(name, where, url, env)


@pytest.fixture
def scene(pg_admin_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Scene]:
    world = make_scene(pg_admin_url, tmp_path / "scene", request.node.name)
    try:
        yield world
    finally:
        world.stop_all()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    documents, large = getattr(request.module, "CORPUS", (60, 2))
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, documents=documents, large=large)
    return root


@pytest.fixture(scope="module")
def reference(
    pg_admin_url: str, corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, int]:
    """Chunks per file name after a fault-free run of ``corpus`` into its own database."""
    world = make_scene(pg_admin_url, tmp_path_factory.mktemp("reference"), "reference")
    try:
        done = world.cli("ingest", "-q", str(corpus))
        assert done.returncode == 0, done.stderr[-2000:]
        assert world.start().wait() == 0, world.daemons[-1].tail()
        with world.conn() as c:
            rows = c.execute(
                "SELECT d.filename, d.status::text AS status,"
                " (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS n"
                " FROM documents d"
            ).fetchall()
    finally:
        world.stop_all()
    assert rows and all(r["status"] == "complete" for r in rows), rows
    return {r["filename"]: int(r["n"]) for r in rows}


@pytest.fixture
def verify(scene: Scene) -> Callable[..., dict[str, Any]]:
    """Check the invariants after the scenario, record its row, fail on any violation."""

    def run(
        reference: dict[str, int] | None, *, faults: str, recover_seconds: float | None = None
    ) -> dict[str, Any]:
        with scene.conn() as c:
            violations, summary = invariants.check(
                c, reference=reference, secrets=SECRETS, logs=scene.logs
            )
        for release in scene.releases:
            release()
        violations += invariants.leftovers(scene.home)
        summary["violations"] = len(violations)
        row = {"scenario": scene.name, "faults": faults, **summary}
        row["recover_s"] = None if recover_seconds is None else round(recover_seconds, 2)
        results.record("scenarios", row)
        assert violations == [], "\n".join(violations)
        return summary

    return run
