"""sd_notify against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestd.supervisor.sdnotify import SdNotifyError, SystemdNotifier

TIMEOUT = 5.0  # safety net only: local datagrams arrive at once


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(TIMEOUT)
    yield sock, path
    sock.close()


def recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready() is True
    assert recv(sock) == "READY=1"
    notifier.status("2 workers, 0 queued")
    assert recv(sock) == "STATUS=2 workers, 0 queued"
    notifier.watchdog()
    assert recv(sock) == "WATCHDOG=1"
    notifier.ready(status="running")
    assert recv(sock) == "READY=1\nSTATUS=running"
    notifier.reloading()
    reloading, monotonic = recv(sock).split("\n")
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=") and int(monotonic.split("=")[1]) > 0
    notifier.stopping(status="draining 2 workers")
    assert recv(sock) == "STOPPING=1\nSTATUS=draining 2 workers"
    notifier.stopping()
    assert recv(sock) == "STOPPING=1"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"ingestd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(TIMEOUT)
    try:
        notifier = SystemdNotifier(f"@{name}")
        notifier.ready()
        assert recv(sock) == "READY=1"
        notifier.watchdog()
        assert recv(sock) == "WATCHDOG=1"
    finally:
        sock.close()


def test_no_op_outside_systemd() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_environment_is_removed_for_children(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "PATH": "/usr/bin"}
    SystemdNotifier.from_environment(env)
    assert env == {"PATH": "/usr/bin"}
    env2 = {"NOTIFY_SOCKET": path}
    SystemdNotifier.from_environment(env2, unset=False)
    assert env2 == {"NOTIFY_SOCKET": path}


def test_watchdog_interval() -> None:
    n = SystemdNotifier.from_environment({"WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval() == 30.0
    mine = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid())}
    assert SystemdNotifier.from_environment(mine).watchdog_interval() == 5.0
    other = {"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier.from_environment(other).watchdog_interval() is None
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        SystemdNotifier.from_environment({"WATCHDOG_USEC": "soon"})


def test_undeliverable_message_raises(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    with pytest.raises(SdNotifyError, match="nobody-listens"):
        notifier.watchdog()


def test_invalid_input_is_refused(listener: tuple[socket.socket, str]) -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        SystemdNotifier("relative/path")
    notifier = SystemdNotifier(listener[1])
    with pytest.raises(ValueError, match="single line"):
        notifier.status("two\nlines")


def test_only_the_creating_process_may_notify(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = SystemdNotifier(path)
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        code = 1
        try:
            notifier.ready()
        except RuntimeError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    notifier.watchdog()
    assert recv(sock) == "WATCHDOG=1"  # the child's READY=1 never went out
