"""Scratch directories and databases for benchmarks and profiles, gone when done.

A pipeline run leaves ~1 GB behind (the embedded server's data and WAL, the
generated documents); a few dozen runs would fill a disk.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from ingestd.shared.db.embedded import embedded_url, release_embedded
from ingestd.shared.db.migrate import migrate


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, deleted at exit by the process that made it.

    Make it before starting an embedded server in it: exit handlers run last
    registered first, so the server (pgserver's handler) stops before its data
    directory goes. Forked workers leave through ``os._exit`` and run no handlers.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


@contextlib.contextmanager
def scratch_database(database_url: str | None, prefix: str) -> Iterator[str]:
    """A new, migrated database for one run, gone afterwards: on the server at
    ``database_url`` (dropped), else on a new embedded server in a scratch directory
    (stopped, so that it does not checkpoint under the next run, and its files deleted).
    """
    home = None if database_url else scratch_dir(prefix)
    admin = database_url or embedded_url(home)  # type: ignore[arg-type]
    url = None
    try:
        url = fresh_database(admin)
        yield url
    finally:
        if home is not None:
            release_embedded(home)
            # Now, not at exit: a run leaves ~1 GB there, and files kept until the end of
            # a --repeat series are written back to disk under the runs that follow it.
            shutil.rmtree(home, ignore_errors=True)
        elif url is not None:
            drop_database(admin, url)


def fresh_database(admin_url: str) -> str:
    """A new, migrated database on the server at ``admin_url``; its URL."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    try:
        migrate(url)
    except BaseException:
        drop_database(admin_url, url)  # not left half-made on the caller's server
        raise
    return url


def drop_database(admin_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
