"""The embedded PostgreSQL + pgvector server (``pgserver``) kept under INGESTD_HOME.

pgserver starts one postmaster per data directory and lets several processes on the
machine share it: each registers its pid in the data directory's user list, and the
last one to leave (at exit) stops the server. It listens on a Unix socket only.

That list only learns of exits that run exit handlers. A SIGKILLed process stays
listed for good, and then no later exit is ever the last one: the server would run
forever. So whenever a process joins or leaves, users that are gone are dropped from
the list first, under pgserver's own lock: no such pid, a zombie, or a pid that now
names a process started after the one that registered (we note each user's start
time next to the data directory). A server left running with no live user is then
joined like any other (adopted) and stopped by its last leaver.

That alone waits for the next ingestd process to notice. So the first joiner also
starts a reaper: a small detached process that checks the list every second and stops
the server once no live user remains, however the last one ended; it exits with the
server. A server left with neither (both killed) is stopped by the next command.

``ingestd db start`` keeps the server running between commands: a mark that every
leaver and the reaper read (pgserver's ``cleanup_mode`` is None then), cleared by
``db stop``.

A process that joins without having chosen what SIGTERM and SIGHUP do (a CLI
command) gets handlers that leave through the normal exit path, so a terminated
command or a closed terminal lets go of the server too; the daemon sets its own.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import psutil

from ingestd.shared.errors import ConfigError

_log = logging.getLogger(__name__)

# pgserver's user list inside the data directory (its PostgresServer.global_process_id_list;
# tests/shared/db/test_embedded_users.py fails if a pgserver release moves it).
USERS_FILE = ".handle_pids.json"
# Ours, beside the data directory (never in it: initdb wants an empty directory):
# {"kept": bool, "started": {pid: process start time}, "reaper": {"pid", "started"}}.
STATE_FILE = "pg-users.json"
REAPER_LOG = "pg-reaper.log"
REAP_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 60.0
# Two start times of one process agree exactly; a reused pid's differ by far more.
_START_TIME_TOLERANCE = 0.05
_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_SERVERS: dict[Path, Any] = {}
_LEAVE_HOOKS: dict[Path, Any] = {}


class ServerInUse(Exception):
    """``db stop`` without ``--force`` while other processes use the server."""

    def __init__(self, users: list[User]) -> None:
        super().__init__(", ".join(u.describe() for u in users))
        self.users = users


class StopFailed(Exception):
    """The postmaster did not exit after a fast shutdown request."""


@dataclass(frozen=True)
class User:
    """A process registered as using the server."""

    pid: int
    alive: bool
    command: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


@dataclass
class EmbeddedStatus:
    data_dir: Path
    running: bool
    pid: int | None = None
    url: str | None = None
    kept: bool = False
    users: list[User] = field(default_factory=list)
    reaper_pid: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "embedded": True,
            "running": self.running,
            "pid": self.pid,
            "data_dir": str(self.data_dir),
            "url": self.url,
            "kept": self.kept,
            "users": [asdict(u) for u in self.users],
            "reaper_pid": self.reaper_pid,
        }


def data_dir(home: Path) -> Path:
    return (home / "pg").resolve()


# -- joining and leaving ---------------------------------------------------------


def embedded_url(home: Path, database: str = "postgres") -> str:
    """Start (or join) the embedded server and return its connection URL."""
    pgdata = data_dir(home)
    server = _SERVERS.get(pgdata)
    if server is None:
        # First: a signal that comes once this process is listed must leave through exit.
        _release_on_exit_signals()
        pgserver = _pgserver()
        # Made here because pgserver's own mkdir races when two processes start together.
        pgdata.mkdir(parents=True, exist_ok=True)
        with _locked(pgserver):
            _drop_stale_users(pgdata)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise ConfigError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc} "
                f"(its log is {pgdata / 'log'})"
            ) from exc
        with _locked(pgserver):
            # pgserver hands back a cached handle without registering again (after a
            # release that was not the last): registering is idempotent.
            server.global_process_id_list.get_and_add(os.getpid())
            _note_start(pgdata, os.getpid())
            reaper = _read_state(pgdata)["reaper"]
            has_reaper = reaper is not None and _alive(reaper["pid"], reaper["started"])
        if not has_reaper:
            _spawn_reaper(pgdata)
        _SERVERS[pgdata] = server
        _register_leave(pgdata, server)
        _log.info("embedded postgres ready", extra={"pgdata": str(pgdata)})
    return str(server.get_uri(database))


def revive(home: Path) -> int | None:
    """Start the embedded server under ``home`` again if this process uses it and its
    postmaster is gone (killed, or crashed past PostgreSQL's own restart): the same data
    directory and socket, so every URL handed out stays valid. Returns the new
    postmaster's pid, or None when there was nothing to do (not in use here, or running).

    The reaper exits with the server it watched, so a new one is started as well."""
    pgdata = data_dir(home)
    server = _SERVERS.get(pgdata)
    if server is None or _postmaster(pgdata) is not None:
        return None
    pgserver = _pgserver()
    with _locked(pgserver):
        # Another user of the same server may have started it meanwhile.
        if _postmaster(pgdata) is None:
            # pgserver's start routine (pg_ctl -w start), without its lock: we hold it.
            server.ensure_postgres_running()
        reaper = _read_state(pgdata)["reaper"]
        has_reaper = reaper is not None and _alive(reaper["pid"], reaper["started"])
    if not has_reaper:
        _spawn_reaper(pgdata)
    postmaster = _postmaster(pgdata)
    return postmaster.pid if postmaster else None


def release_embedded(home: Path) -> None:
    """Let go of the embedded server under ``home`` before this process exits (as a
    benchmark does between runs): it stops now if no other process still uses it."""
    pgdata = data_dir(home)
    hook = _LEAVE_HOOKS.pop(pgdata, None)
    if hook is not None:
        atexit.unregister(hook)
        hook()


def _register_leave(pgdata: Path, server: Any) -> None:
    owner = os.getpid()

    def leave() -> None:
        # A forked child (a worker) inherits this hook but never joined.
        if os.getpid() != owner:
            return
        _SERVERS.pop(pgdata, None)
        _LEAVE_HOOKS.pop(pgdata, None)
        pgserver = _pgserver()
        with _locked(pgserver):
            _drop_stale_users(pgdata)
            state = _read_state(pgdata)
            state["started"].pop(str(owner), None)
            _write_state(pgdata, state)
            server.cleanup_mode = None if state["kept"] else "stop"
        # pgserver stops the server here if this process is its last live user.
        server.cleanup()

    # Exit handlers run last registered first: this one before pgserver's own.
    atexit.register(leave)
    _LEAVE_HOOKS[pgdata] = leave


def _release_on_exit_signals() -> None:
    """SIGTERM and SIGHUP end a process without its exit handlers unless it handles
    them: where nothing else does, make them exit normally (status 128 + signal)."""
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def exit_normally(signum: int, _frame: FrameType | None) -> None:
        for sig in _EXIT_SIGNALS:  # a second signal ends the process at once
            signal.signal(sig, signal.SIG_DFL)
        if os.getpid() != owner:
            os.kill(os.getpid(), signum)
            return
        raise SystemExit(128 + signum)

    for sig in _EXIT_SIGNALS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, exit_normally)


# -- keeping, stopping, inspecting -----------------------------------------------


def keep(home: Path) -> EmbeddedStatus:
    """Start the server (or join the running one) and mark it kept: it runs on after
    this process exits, until ``stop``."""
    embedded_url(home)
    pgdata = data_dir(home)
    with _locked(_pgserver()):
        state = _read_state(pgdata)
        state["kept"] = True
        _write_state(pgdata, state)
    return status(home)


def stop(home: Path, *, force: bool = False) -> tuple[bool, list[User]]:
    """Stop the server (fast shutdown: sessions are ended) and clear the kept mark.

    Refuses with ``ServerInUse`` while another live process uses it, unless ``force``.
    Returns whether a running server was stopped, and the live users it had.
    """
    pgdata = data_dir(home)
    with _locked(_pgserver()):
        _drop_stale_users(pgdata)
        users = [u for u in _users(pgdata) if u.alive and u.pid != os.getpid()]
        if users and not force:
            raise ServerInUse(users)
        state = _read_state(pgdata)
        state["kept"] = False
        _write_state(pgdata, state)
        postmaster = _postmaster(pgdata)
        if postmaster is None:
            return False, users
        # Under the lock, so nobody joins a server that is shutting down.
        _stop_postmaster(postmaster, pgdata)
    return True, users


def status(home: Path) -> EmbeddedStatus:
    """The server's state, read without starting it."""
    pgdata = data_dir(home)
    pgserver = _pgserver()
    with _locked(pgserver):
        users = _users(pgdata)
        state = _read_state(pgdata)
    reaper = state["reaper"]
    postmaster = _postmaster(pgdata)
    result = EmbeddedStatus(
        data_dir=pgdata,
        running=postmaster is not None,
        kept=state["kept"],
        users=users,
        reaper_pid=reaper["pid"] if reaper and _alive(reaper["pid"], reaper["started"]) else None,
    )
    if postmaster is not None:
        result.pid = postmaster.pid
        info = pgserver.utils.PostmasterInfo.read_from_pgdata(pgdata)
        result.url = info.get_uri() if info is not None else None
    return result


def bundled_psql() -> Path | None:
    """The psql that ships with the embedded server (its version matches), if any."""
    from pgserver.postgres_server import POSTGRES_BIN_PATH

    path = Path(POSTGRES_BIN_PATH) / "psql"
    return path if os.access(path, os.X_OK) else None


# -- the user list ------------------------------------------------------------------


def drop_stale_users(home: Path) -> list[int]:
    """Drop the users of the server under ``home`` that are gone; their pids."""
    with _locked(_pgserver()):
        return _drop_stale_users(data_dir(home))


def _drop_stale_users(pgdata: Path) -> list[int]:
    """Remove users that are gone from pgserver's list (the caller holds the lock)."""
    path = pgdata / USERS_FILE
    if not path.exists():
        return []
    pids = _read_pids(path)
    state = _read_state(pgdata)
    started = state["started"]
    stale = [pid for pid in pids if not _alive(pid, started.get(str(pid)))]
    if stale:
        _write_json(path, [pid for pid in pids if pid not in stale])
        _log.info("embedded postgres: dropped users that are gone", extra={"pids": stale})
    live = {str(pid) for pid in pids if pid not in stale}
    if set(started) - live:
        state["started"] = {pid: t for pid, t in started.items() if pid in live}
        _write_state(pgdata, state)
    return stale


def _users(pgdata: Path, *, quiet: bool = False) -> list[User]:
    """The registered users; ``quiet``: a look without the lock (a torn list reads as
    no pids at all, to be read again under the lock)."""
    path = pgdata / USERS_FILE
    if quiet:
        try:
            pids = [int(p) for p in json.loads(path.read_text())]
        except (FileNotFoundError, ValueError):
            pids = []
    else:
        pids = _read_pids(path) if path.exists() else []
    started = _read_state(pgdata)["started"]
    users = []
    for pid in pids:
        alive = _alive(pid, started.get(str(pid)))
        users.append(User(pid, alive, _command(pid) if alive else ""))
    return users


def _note_start(pgdata: Path, pid: int) -> None:
    state = _read_state(pgdata)
    state["started"][str(pid)] = psutil.Process(pid).create_time()
    _write_state(pgdata, state)


def _alive(pid: int, started: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) <= _START_TIME_TOLERANCE
    except psutil.NoSuchProcess:
        return False


def _command(pid: int) -> str:
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return ""
    if argv and Path(argv[0]).name.startswith("python"):
        if len(argv) > 2 and argv[1] == "-m":  # python -m ingestd.supervisor.cli ...
            argv = ["ingestd", *argv[3:]]
        elif len(argv) > 1:  # python .venv/bin/ingestd ...
            argv = argv[1:]
    if argv:
        argv = [Path(argv[0]).name, *argv[1:]]
    text = " ".join(" ".join(argv).split())  # a process title is padded with spaces
    return text if len(text) <= 60 else text[:59] + "…"


def _read_pids(path: Path) -> list[int]:
    try:
        value = json.loads(path.read_text())
    except ValueError as exc:
        # pgserver writes it in place; a process killed mid-write leaves it torn, and
        # pgserver itself would then fail every start. Its users are unknown: say so.
        _log.warning(
            "embedded postgres: unreadable user list, starting it afresh",
            extra={"path": str(path), "error": str(exc)},
        )
        _write_json(path, [])
        return []
    return [int(pid) for pid in value]


def _state_path(pgdata: Path) -> Path:
    return pgdata.parent / STATE_FILE


def _read_state(pgdata: Path) -> dict[str, Any]:
    path = _state_path(pgdata)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raw = {}
    except ValueError:
        _log.warning("embedded postgres: unreadable %s, starting it afresh", path)
        raw = {}
    return {
        "kept": bool(raw.get("kept", False)),
        "started": dict(raw.get("started", {})),
        "reaper": raw.get("reaper"),
    }


def _write_state(pgdata: Path, state: dict[str, Any]) -> None:
    if pgdata.parent.exists():  # a scratch home may be deleted before its last exit handler
        _write_json(_state_path(pgdata), state)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


# -- the reaper ---------------------------------------------------------------------


def _spawn_reaper(pgdata: Path) -> None:
    """Start ``reap`` detached (its own session, not our child: a daemon that waits
    only for the children it knows must not collect a zombie)."""
    argv = [sys.executable, "-m", "ingestd.shared.db.embedded", "reap", str(pgdata.parent)]
    log_fd = os.open(pgdata.parent / REAPER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the intermediate child
            code = 0
            try:
                os.setsid()
                if os.fork() == 0:
                    os.dup2(null_fd, 0)
                    os.dup2(log_fd, 1)
                    os.dup2(log_fd, 2)
                    os.execv(sys.executable, argv)
            except BaseException:
                code = 127
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
    finally:
        os.close(log_fd)
        os.close(null_fd)


def reap(home: Path) -> int:
    """Stop the server under ``home`` once no live process uses it (the reaper's body)."""
    pgdata = data_dir(home)
    pgserver = _pgserver()
    me = os.getpid()
    with _locked(pgserver):
        state = _read_state(pgdata)
        other = state["reaper"]
        if other is not None and other["pid"] != me and _alive(other["pid"], other["started"]):
            return 0
        state["reaper"] = {"pid": me, "started": psutil.Process(me).create_time()}
        _write_state(pgdata, state)
    try:
        while True:
            time.sleep(REAP_SECONDS)
            if _postmaster(pgdata) is not None and any(u.alive for u in _users(pgdata, quiet=True)):
                continue
            with _locked(pgserver):
                # Decided and recorded under the lock: a joiner that finds this reaper
                # registered may rely on it for the server it just started.
                _drop_stale_users(pgdata)
                state = _read_state(pgdata)
                postmaster = _postmaster(pgdata)
                if postmaster is not None and not state["kept"]:
                    if any(u.alive for u in _users(pgdata)):
                        continue  # one joined meanwhile
                    print(
                        f"{time.ctime()}: no live user left; stopping pid {postmaster.pid}",
                        flush=True,
                    )
                    _stop_postmaster(postmaster, pgdata)
                state["reaper"] = None
                _write_state(pgdata, state)
                return 0
    finally:
        with _locked(pgserver):
            state = _read_state(pgdata)
            if (state["reaper"] or {}).get("pid") == me:
                state["reaper"] = None
                _write_state(pgdata, state)


# -- the postmaster -----------------------------------------------------------------


def _postmaster(pgdata: Path) -> psutil.Process | None:
    """The running postmaster of ``pgdata``, from its pid file; None if there is none."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or proc.name() != "postgres":
            return None
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return None
    return proc


def _stop_postmaster(proc: psutil.Process, pgdata: Path) -> None:
    # SIGINT is PostgreSQL's fast shutdown, what `pg_ctl stop` sends; signalling it
    # directly works whichever system user pgserver runs the server as.
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT_SECONDS)
    except psutil.TimeoutExpired:
        raise StopFailed(
            f"the embedded PostgreSQL (pid {proc.pid}) did not stop within "
            f"{STOP_TIMEOUT_SECONDS:.0f} s; see {pgdata / 'log'}"
        ) from None


# -- pgserver -------------------------------------------------------------------------


def _pgserver() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI);
            # pgserver then keeps its lock file under /tmp, which is fine.
            warnings.simplefilter("ignore")
            import pgserver
            import pgserver.utils
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ConfigError(
            "the embedded database needs the 'pgserver' package; "
            "install ingestd with pip, or set INGESTD_DATABASE_URL"
        ) from exc
    return pgserver


@contextlib.contextmanager
def _locked(pgserver: ModuleType) -> Iterator[None]:
    """pgserver's machine-wide lock (the same file and the same POSIX record lock that
    its fasteners lock takes). Never held across a call into pgserver: POSIX locks
    belong to the process, and pgserver closing its own descriptor would drop ours."""
    path = Path(pgserver.PostgresServer.lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


if __name__ == "__main__":  # the reaper: python -m ingestd.shared.db.embedded reap HOME
    if len(sys.argv) != 3 or sys.argv[1] != "reap":
        sys.exit("usage: python -m ingestd.shared.db.embedded reap HOME")
    sys.exit(reap(Path(sys.argv[2])))
