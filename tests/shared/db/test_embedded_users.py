"""The embedded server's user list: users that are gone are dropped, live ones kept.

Real processes stand for each kind of user: this one, a sleeping child, a child that
exited and was reaped, a zombie (exited, not reaped: a killed command whose parent has
not waited yet), and a live process whose pid was registered by an earlier process
(the pid reused)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ingestd.shared.db import embedded
from tests.polling import wait_until

KINDS = ("self", "child", "reaped", "zombie", "reused")
LIVE = {"self", "child"}


@pytest.fixture
def processes() -> Iterator[dict[str, int]]:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reused = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    reaped = subprocess.Popen(["true"])
    reaped.wait()
    zombie = subprocess.Popen(["true"])
    wait_until(
        lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE,
        "the child to exit unreaped",
        timeout=30,
    )
    try:
        yield {
            "self": psutil.Process().pid,
            "child": sleeper.pid,
            "reaped": reaped.pid,
            "zombie": zombie.pid,
            "reused": reused.pid,
        }
    finally:
        for proc in (sleeper, reused):
            proc.kill()
            proc.wait()
        zombie.wait()


def _start_time(kind: str, pid: int) -> float:
    real = psutil.Process(pid).create_time() if kind in LIVE | {"reused"} else 1000.0
    # The "reused" pid was registered by a process started long before this one.
    return real - 3600 if kind == "reused" else real


def test_only_live_users_survive_a_join_or_leave(processes: dict[str, int], tmp_path: Path) -> None:
    home = tmp_path / "home"
    pgdata = embedded.data_dir(home)
    pgdata.mkdir(parents=True)
    # Every combination, with and without the start times that ingestd notes (a
    # list written by another pgserver user has none).
    for n in range(len(KINDS) + 1):
        for kinds in itertools.combinations(KINDS, n):
            for noted in (True, False):
                pids = [processes[k] for k in kinds]
                started = {str(processes[k]): _start_time(k, processes[k]) for k in kinds}
                (pgdata / embedded.USERS_FILE).write_text(json.dumps(pids))
                (home / embedded.STATE_FILE).write_text(
                    json.dumps({"kept": False, "started": started if noted else {}})
                )

                dropped = embedded.drop_stale_users(home)

                # Without a noted start time a reused pid cannot be told from its owner.
                live = LIVE | ({"reused"} if not noted else set())
                expected = [processes[k] for k in kinds if k in live]
                assert json.loads((pgdata / embedded.USERS_FILE).read_text()) == expected, kinds
                assert sorted(dropped) == sorted(set(pids) - set(expected)), kinds
                state = json.loads((home / embedded.STATE_FILE).read_text())
                assert set(state.get("started", {})) <= {str(p) for p in expected}, kinds


def test_a_torn_user_list_is_reported_and_started_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    pgdata = embedded.data_dir(home)
    pgdata.mkdir(parents=True)
    (pgdata / embedded.USERS_FILE).write_text("[12, 3")  # a writer killed mid-write

    assert embedded.drop_stale_users(home) == []

    assert json.loads((pgdata / embedded.USERS_FILE).read_text()) == []
    assert "unreadable user list" in caplog.text


def test_no_list_is_written_into_a_data_directory_not_yet_made(tmp_path: Path) -> None:
    # initdb refuses a directory that is not empty.
    home = tmp_path / "home"
    embedded.data_dir(home).mkdir(parents=True)
    assert embedded.drop_stale_users(home) == []
    assert list(embedded.data_dir(home).iterdir()) == []


@pytest.mark.db  # starts an embedded server of its own
def test_a_dead_user_is_dropped_so_the_last_live_leaver_stops_the_server(tmp_path: Path) -> None:
    import pgserver

    embedded.embedded_url(tmp_path)
    pgdata = embedded.data_dir(tmp_path)
    users = pgdata / embedded.USERS_FILE
    try:
        # The list read here is the one pgserver keeps.
        assert pgserver.get_server(pgdata).global_process_id_list.path == users
        state = embedded.status(tmp_path)
        assert [(u.pid, u.alive) for u in state.users] == [(psutil.Process().pid, True)]
        gone = subprocess.Popen(["true"])
        gone.wait()
        # As a SIGKILLed command leaves it: registered, never removed.
        users.write_text(json.dumps([*json.loads(users.read_text()), gone.pid]))
    finally:
        embedded.release_embedded(tmp_path)

    assert embedded.status(tmp_path).running is False
    assert state.pid is not None
    assert not psutil.pid_exists(state.pid) or (
        psutil.Process(state.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert json.loads(users.read_text()) == []
