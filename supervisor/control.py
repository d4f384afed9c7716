"""How a running supervisor is found and talked to.

A supervisor makes itself known two ways: a pid file under INGESTD_HOME (for
commands on the same machine), and rows in ``supervisor_status``/``worker_status``
(for ``ingestd status`` and ``/v1/status`` on any host), refreshed about every
second and deleted when it exits. Their SQL is in ``shared.db.supervisors``, the
``--drain`` and lease questions in ``shared.db.reports``; document status changes
go through ``shared.db.jobs``.

Control requests go through files plus a signal, because only the supervisor
knows which pid is in which slot right now: ``request_profile`` writes
``$INGESTD_HOME/profiles/request-<slot>.json`` (``{"id", "slot", "path", ...}``)
and sends SIGUSR2 to the supervisor, which forwards SIGUSR1 to that slot's
worker; the worker records its next document with memray into ``path``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from ingestd.shared.db import supervisors
from ingestd.shared.db.connect import connect, database_url
from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import Settings
from ingestd.supervisor.proctitle import is_supervisor_title

PID_FILE = "supervisor.pid"
PROFILES_DIR = "profiles"


class ControlError(ConfigError):
    """A control command cannot be carried out (no supervisor running, no such slot).
    A ConfigError so that the CLI prints the message and exits 2."""


class SupervisorNotRunning(ControlError):
    """No supervisor to ask: the CLI exits 3, as for any other service it cannot reach."""


def supervisor_id(hostname: str, pid: int) -> str:
    return f"{hostname}:{pid}"


def hostname() -> str:
    return socket.gethostname()


# -- pid file ----------------------------------------------------------------------


def pid_file(settings: Settings) -> Path:
    return settings.home / PID_FILE


def write_pid_file(settings: Settings, pid: int) -> Path:
    path = pid_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{PID_FILE}.{pid}")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)
    return path


def remove_pid_file(settings: Settings, pid: int) -> None:
    """Remove the pid file if it is still ours (another supervisor may have replaced it)."""
    path = pid_file(settings)
    if read_pid_file(path) == pid:
        path.unlink(missing_ok=True)


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def is_running_supervisor(pid: int) -> bool:
    try:
        return is_supervisor_title(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def forget_dead_supervisors(conn: psycopg.Connection[Any], host: str) -> list[str]:
    """Delete the rows of supervisors on this host whose process is gone (a SIGKILLed
    supervisor cannot delete its own). Other hosts' rows are theirs to manage."""
    dead = [
        r["supervisor"]
        for r in local_supervisors(conn, host)
        if not is_running_supervisor(r["pid"])
    ]
    for sup in dead:
        supervisors.withdraw(conn, sup)
    return dead


def local_supervisors(conn: psycopg.Connection[Any], host: str) -> list[dict[str, Any]]:
    return supervisors.on_host(conn, host)


# -- control commands ------------------------------------------------------------------


def profile_request_path(settings: Settings, slot: int) -> Path:
    return settings.home / PROFILES_DIR / f"request-{slot}.json"


def read_profile_request(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # being replaced: request_profile writes through a rename
    return data if isinstance(data, dict) else None


def find_local_supervisor(settings: Settings, conn: psycopg.Connection[Any] | None) -> int:
    """The pid of the supervisor running on this machine for these settings."""
    pid = read_pid_file(pid_file(settings))
    if pid is not None and is_running_supervisor(pid):
        return pid
    if conn is not None:
        alive = [
            r["pid"] for r in local_supervisors(conn, hostname()) if is_running_supervisor(r["pid"])
        ]
        if len(alive) == 1:
            return int(alive[0])
        if len(alive) > 1:
            raise ControlError(
                f"{len(alive)} supervisors run on this host ({', '.join(map(str, alive))}) "
                f"and none wrote {pid_file(settings)}; use the INGESTD_HOME of the one you mean"
            )
    raise SupervisorNotRunning(
        f"no running ingestd supervisor found on this host "
        f"(no live pid in {pid_file(settings)}); start one with `ingestd run`"
    )


def request_profile(settings: Settings, slot: int) -> Path:
    """Ask the worker in ``slot`` to record its next document with memray.

    Returns where the capture will be written (``memray flamegraph <path>`` reads it).
    """
    if slot < 0:
        raise ControlError(f"slot must be 0 or more, got {slot}")
    with connect(
        database_url(settings), autocommit=True, application_name="ingestd-control"
    ) as conn:
        pid = find_local_supervisor(settings, conn)
        slots = supervisors.worker_slots(conn, supervisor_id(hostname(), pid))
    if slots and slot not in slots:
        raise ControlError(
            f"the supervisor (pid {pid}) has no worker in slot {slot}; its slots are "
            f"{', '.join(map(str, slots))}"
        )
    profiles = settings.home / PROFILES_DIR
    profiles.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    request_id = uuid.uuid4().hex
    output = profiles / f"worker{slot}-{stamp}-{request_id[:8]}.bin"
    request = {
        "id": request_id,
        "slot": slot,
        "path": str(output),
        "requested_at": datetime.now(UTC).isoformat(),
        "supervisor_pid": pid,
    }
    target = profile_request_path(settings, slot)
    tmp = target.with_name(f".{target.name}.{request_id}")
    tmp.write_text(json.dumps(request))
    tmp.replace(target)
    try:
        os.kill(pid, signal.SIGUSR2)
    except ProcessLookupError:
        raise SupervisorNotRunning(
            f"the supervisor (pid {pid}) exited before it got the request"
        ) from None
    return output
