"""The embedded server (pgserver) under a home directory: joined, and let go of."""

from __future__ import annotations

from pathlib import Path

import psutil
import psycopg
import pytest

from ingestd.shared.db.embedded import embedded_url, release_embedded


def _postmaster_pid(home: Path) -> int:
    return int((home / "pg" / "postmaster.pid").read_text().split()[0])


@pytest.mark.db  # starts an embedded server of its own
def test_release_stops_a_server_no_other_process_holds(tmp_path: Path) -> None:
    url = embedded_url(tmp_path)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    pid = _postmaster_pid(tmp_path)
    assert psutil.pid_exists(pid)

    release_embedded(tmp_path)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    # Joining again starts it again.
    url = embedded_url(tmp_path)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    release_embedded(tmp_path)
    release_embedded(tmp_path)  # a second release is a no-op
