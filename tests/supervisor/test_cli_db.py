"""``ingestd db shell|start|stop|status|url`` and the embedded server's lifetime, as an
operator meets them: real ``ingestd`` processes on a real embedded server in a
temporary INGESTD_HOME, killed the ways commands die (SIGKILL, SIGTERM, SIGHUP).

Every test starts from a copy of one migrated home (made once per module), so only
one initdb is paid for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ingestd.shared.db import embedded
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180.0  # a safety net only: an initdb on a loaded 2-core machine takes a while

# Each test starts an embedded server of its own (and one initdb per module).
pytestmark = [pytest.mark.db, pytest.mark.slow]


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INGESTD_", "OPENAI_")) and k != "DATABASE_URL"
    }
    env.update(
        INGESTD_HOME=str(home),
        INGESTD_EMBEDDER="hash",
        INGESTD_WORKERS="1",
        INGESTD_HTTP_PORT="0",
        PYTHONPATH=str(ROOT),
    )
    return env


def ingestd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args],
        cwd=ROOT,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("template") / "home"
    done = ingestd(home, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert _postmaster(home) is None, "the template's server outlived `db migrate`"
    return home


@pytest.fixture
def home(migrated_home: Path, tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    # cp -a keeps the owner: as root, pgserver runs the server as another user.
    subprocess.run(["cp", "-a", str(migrated_home), str(home)], check=True)
    yield home
    # Whatever a test left, the next must not inherit it.
    postmaster = _postmaster(home)
    if postmaster is not None:
        postmaster.send_signal(signal.SIGINT)
        postmaster.wait(60)


@pytest.fixture
def spawn(home: Path, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"out-{len(procs)}.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ingestd.supervisor.cli", *args],
                cwd=ROOT,
                env=_env(home),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):  # its workers too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _postmaster(home: Path) -> psutil.Process | None:
    """The running postmaster of ``home``, from its pid file."""
    try:
        pid = int((embedded.data_dir(home) / "postmaster.pid").read_text().split()[0])
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (FileNotFoundError, IndexError, psutil.NoSuchProcess):
        return None


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _users(home: Path) -> list[int]:
    path = embedded.data_dir(home) / embedded.USERS_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _holding(home: Path, proc: subprocess.Popen[bytes]) -> psutil.Process:
    """Wait until ``proc`` has joined the server; the postmaster."""
    wait_until(
        lambda: proc.pid in _users(home) or proc.poll() is not None,
        f"pid {proc.pid} to join the embedded server",
        timeout=TIMEOUT,
    )
    assert proc.poll() is None, f"exited {proc.returncode} before joining"
    postmaster = _postmaster(home)
    assert postmaster is not None
    return postmaster


def test_db_shell_runs_psql_on_the_embedded_server_and_then_lets_it_go(home: Path) -> None:
    done = ingestd(home, "db", "shell", "-c", "select 1")
    assert done.returncode == 0, done.stderr
    assert "1" in [line.strip() for line in done.stdout.splitlines()]
    assert _postmaster(home) is None

    done = ingestd(home, "db", "shell", "--", "-At", "-c", "select 40 + 2")
    assert (done.returncode, done.stdout.strip()) == (0, "42"), done.stderr

    # The exit status is psql's.
    done = ingestd(home, "db", "shell", "-c", "select 1/0")
    assert done.returncode == 1
    assert "division by zero" in done.stderr
    assert "Traceback" not in done.stderr

    done = ingestd(home, "db", "url")
    assert done.returncode == 0
    assert done.stdout.startswith("postgresql://") and done.stdout.count("\n") == 1
    assert "only while the embedded server runs" in done.stderr
    assert "ingestd db start" in done.stderr
    assert _postmaster(home) is None


def test_db_start_keeps_the_server_running_until_db_stop(home: Path) -> None:
    done = ingestd(home, "db", "start")
    assert done.returncode == 0, done.stderr
    postmaster = _postmaster(home)
    assert postmaster is not None

    done = ingestd(home, "db", "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["running"] is True and status["kept"] is True
    assert status["pid"] == postmaster.pid
    assert status["data_dir"] == str(embedded.data_dir(home))
    assert status["users"] == []  # `db start` itself has left
    # The reaper leaves a kept server alone (and exits).
    wait_until(
        lambda: json.loads(ingestd(home, "db", "status", "--json").stdout)["reaper_pid"] is None,
        "the reaper to exit",
        timeout=TIMEOUT,
    )
    assert not _gone(postmaster)

    # The issue's own case: psql "$(ingestd db url)" reaches it after `db url` exited.
    done = ingestd(home, "db", "url")
    assert done.returncode == 0
    url = done.stdout.strip()
    assert url == status["url"]
    assert "kept running" in done.stderr
    psql = embedded.bundled_psql()
    assert psql is not None
    reached = subprocess.run(
        [str(psql), url, "-At", "-c", "select 7"], capture_output=True, text=True, check=False
    )
    assert (reached.returncode, reached.stdout.strip()) == (0, "7"), reached.stderr

    done = ingestd(home, "db", "stop")
    assert (done.returncode, done.stdout.strip()) == (0, "stopped the embedded PostgreSQL")
    assert _gone(postmaster)
    assert _postmaster(home) is None

    done = ingestd(home, "db", "status", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["running"] is False
    assert json.loads(done.stdout)["kept"] is False
    done = ingestd(home, "db", "stop")
    assert (done.returncode, done.stdout.strip()) == (0, "the embedded PostgreSQL is not running")


def test_a_daemon_keeps_db_stop_off_and_its_sigkill_no_longer_leaks_the_server(
    home: Path, spawn: Any
) -> None:
    daemon = spawn("run")
    postmaster = _holding(home, daemon)

    done = ingestd(home, "db", "stop")
    assert done.returncode == 1
    assert f"in use by pid {daemon.pid} (ingestd" in done.stderr
    assert "--force" in done.stderr
    assert not _gone(postmaster)

    status = json.loads(ingestd(home, "db", "status", "--json").stdout)
    assert [(u["pid"], u["alive"]) for u in status["users"]] == [(daemon.pid, True)]

    daemon.kill()  # the supervisor alone, as the OOM killer would
    daemon.wait()

    # pgserver alone keeps the dead pid listed and the server running for good; the
    # reaper stops it, with no other command run.
    wait_until(lambda: _gone(postmaster), "the server to stop", timeout=TIMEOUT)
    assert _users(home) == []


def test_a_server_left_by_a_killed_command_and_reaper_is_stopped_by_the_next_command(
    home: Path, spawn: Any
) -> None:
    watch = spawn("status", "--watch", "--interval", "0.2")
    postmaster = _holding(home, watch)
    reaper = wait_until(
        lambda: json.loads(ingestd(home, "db", "status", "--json").stdout)["reaper_pid"],
        "the reaper to start",
        timeout=TIMEOUT,
    )
    for pid in (reaper, watch.pid):  # kill -9 of everything, as on an OOM storm
        os.kill(pid, signal.SIGKILL)
    watch.wait()
    assert not _gone(postmaster)

    done = ingestd(home, "db", "url")  # any clean command: it adopts the server, then leaves

    assert done.returncode == 0, done.stderr
    wait_until(lambda: _gone(postmaster), "the adopted server to stop", timeout=TIMEOUT)
    assert _users(home) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_terminated_status_watch_releases_the_server(
    home: Path, spawn: Any, sig: signal.Signals
) -> None:
    watch = spawn("status", "--watch", "--interval", "0.2")
    postmaster = _holding(home, watch)
    # Signalled once it watches (rich's refresh thread is up), not while it starts: a
    # signal in the start-up window has been seen to be lost in the full suite (a known
    # defect, in the closing note), which this test is not about.
    wait_until(
        lambda: watch.poll() is not None or len(psutil.Process(watch.pid).threads()) >= 2,
        "the watch loop to run",
        timeout=TIMEOUT,
    )

    watch.send_signal(sig)

    assert watch.wait(TIMEOUT) == 128 + sig
    wait_until(lambda: _gone(postmaster), "the server to stop", timeout=TIMEOUT)
    assert _users(home) == []


def test_db_stop_force_ends_the_sessions_of_live_users(home: Path, spawn: Any) -> None:
    watch = spawn("status", "--watch", "--interval", "0.2")
    postmaster = _holding(home, watch)
    assert ingestd(home, "db", "stop").returncode == 1

    done = ingestd(home, "db", "stop", "--force")

    assert done.returncode == 0, done.stderr
    assert f"sessions of pid {watch.pid} (ingestd status --watch" in done.stdout
    assert _gone(postmaster)
