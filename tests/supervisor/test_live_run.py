"""``ingestd run --drain`` in a pseudo-terminal: what the live view leaves on screen
(replayed through the ``pyte`` terminal emulator), and a view whose terminal goes away."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from typing import Any

import pyte

from ingestd.supervisor.live import LiveView
from tests import polling
from tests.supervisor.observability.obs_support import FAST_ENV

COLUMNS, ROWS = 80, 200  # tall: the whole run's log stays on the emulated screen
TIMEOUT = 120.0  # safety net only: the test ends when the daemon exits


def _run_in_terminal(env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingestd.supervisor.cli", "run", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed its end
                break
            if not data:
                break
            stream.feed(data)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, [line.rstrip() for line in screen.display]


def _env(cli_env: dict[str, str]) -> dict[str, str]:
    env = {**cli_env, **FAST_ENV, "TERM": "xterm-256color", "INGESTD_WORKERS": "2"}
    env.pop("INGESTD_LOG_JSON")  # the terminal decides: console lines and the view
    return env


def test_run_drain_shows_the_live_view_and_its_summary(cli_env, ingest_bytes) -> None:
    for i in range(3):
        ingest_bytes(f"document {i} ".encode() * 300, name=f"doc{i}.txt")
    ingest_bytes(b"binary \x00\x00\x00 junk, not text", name="broken.txt", mime_type=None)

    code, lines = _run_in_terminal(_env(cli_env), "--drain")

    screen = "\n".join(lines)
    assert code == 0, screen
    # One panel left on screen (redrawn in place, not stacked), the summary under it.
    tops = [i for i, line in enumerate(lines) if line.startswith("╭─ ingestd run --drain")]
    assert len(tops) == 1, screen
    bottom = next(i for i, line in enumerate(lines) if line.startswith("╰"))
    panel, after = lines[tops[0] : bottom + 1], [x for x in lines[bottom + 1 :] if x]
    assert all(line.endswith("│") for line in panel[1:-1]), screen  # nothing wrote into it
    assert "state stopped" in screen and "complete 3" in screen and "failed 1" in screen
    assert "this run 4 docs" in screen
    failure = next(line for line in panel if "broken.txt" in line)
    assert "invalid_input" in failure
    assert after == [after[0]] and after[0].startswith("stopped after ")
    assert "3 complete, 1 failed;" in after[0] and after[0].endswith("exit 0")
    # The log scrolled above the panel: the supervisor's lines and the workers' (relayed
    # through the view), in the console format, not JSON.
    log = "\n".join(lines[: tops[0]])
    assert "drain finished" in log and "document complete" in log
    assert "role=worker" in log and '{"' not in log


def test_no_live_leaves_the_plain_log(cli_env, ingest_bytes) -> None:
    ingest_bytes(b"just one " * 100, name="one.txt")

    code, lines = _run_in_terminal(_env(cli_env), "--drain", "--no-live")

    screen = "\n".join(lines)
    assert code == 0, screen
    assert "drain finished" in screen and "document complete" in screen
    assert "╭─" not in screen and "stopped after" not in screen


def test_a_view_whose_terminal_goes_away_turns_itself_off(
    db_url: str, conn: Any, caplog: Any
) -> None:
    master, slave = pty.openpty()
    terminal = open(slave, "w", closefd=True)  # noqa: SIM115
    view = LiveView(db_url, "ingestd run", stream=terminal)
    view.start()
    try:
        polling.wait_until(lambda: view._totals is not None, "a first database reading", 30)
        os.close(master)  # the terminal is gone: every write now fails with EIO
        master = -1
        view._emit("a line after the terminal went away")
        polling.wait_until(lambda: not view._on, "the view turning itself off", 30)
        view.stop(0)  # and stopping it still works: the daemon's exit is not in danger
        assert view.lost_lines >= 1  # counted, and logged by stop()
        said = [r.getMessage() for r in caplog.records]
        assert sum("live view turned off" in m for m in said) == 1, said
        assert sum("log lines lost" in m for m in said) == 1, said
    finally:
        if view._master >= 0:
            view.stop(0)
        with contextlib.suppress(OSError):  # its buffered bytes have nowhere to go
            terminal.close()
        if master >= 0:
            os.close(master)
