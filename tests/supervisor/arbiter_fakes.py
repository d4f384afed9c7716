"""Fake workers that misbehave on purpose, forked by a real Arbiter.

Each has ``worker_main``'s signature and contract (heartbeats on the channel,
SIGTERM/SIGUSR2 graceful, SIGINT fast, exit via ``os._exit``). Parameters come
from ``FAKE_*`` environment variables set by the test.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, NoReturn

from ingestd.shared.channel import WorkerChannel
from ingestd.shared.db import jobs
from ingestd.shared.db.connect import connect, database_url
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_OK
from ingestd.shared.settings import Settings
from ingestd.shared.states import ACTIVE_OF, SUCCESS_OF, Status

BEAT_SECONDS = 0.05
MB = 1024 * 1024


class Flags:
    """Which stop signals arrived (set from handlers, read by the fake's loop)."""

    def __init__(self) -> None:
        self.graceful = False
        self.fast = False
        self.profile = False

    def install(self, *, term: bool = True, intr: bool = True) -> None:
        def graceful(*_: Any) -> None:
            self.graceful = True

        def fast(*_: Any) -> None:
            self.fast = True

        def profile(*_: Any) -> None:
            self.profile = True

        signal.signal(signal.SIGTERM, graceful if term else signal.SIG_IGN)
        signal.signal(signal.SIGUSR2, graceful)
        signal.signal(signal.SIGINT, fast if intr else signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, profile)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _channel(fd: int) -> WorkerChannel:
    return WorkerChannel(fd, min_interval=0.0)


def _exit(code: int) -> NoReturn:
    os._exit(code)


def _claim_one(settings: Settings, owner: str) -> tuple[Any, jobs.Claimed | None]:
    conn = connect(database_url(settings), autocommit=True)
    claimed = jobs.claim(
        conn,
        owner,
        limit=1,
        lease_seconds=settings.lease_seconds,
    )
    return conn, (claimed[0] if claimed else None)


def idle(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    while not (flags.graceful or flags.fast):
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    ch.beat(event="stopping")
    _exit(EXIT_OK)


def holder(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Claims one document and holds it, heartbeating. TERM: release it, exit 0.
    INT: exit at once, lease still held (the supervisor releases it)."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    conn, claimed = None, None
    while not (flags.graceful or flags.fast):
        if claimed is None:
            if conn is not None:
                conn.close()
            conn, claimed = _claim_one(settings, owner)
            if claimed is not None:
                ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    if flags.graceful and claimed is not None and conn is not None:
        jobs.release(conn, claimed.id, owner, reason="fake holder stopping")
    _exit(EXIT_OK)


def mute(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Claims a document, heartbeats once, then hangs, deaf to SIGTERM and SIGINT."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ch = _channel(fd)
    claimed = None
    deadline = time.monotonic() + 5
    while claimed is None and time.monotonic() < deadline:
        _, claimed = _claim_one(settings, owner)
    if claimed is not None:
        ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
    ch.beat(force=True)
    while True:
        signal.pause()


def hog(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Heartbeats, then holds FAKE_ALLOC_MB of touched memory."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    ch.beat(force=True)
    ballast = b"x" * (int(os.environ["FAKE_ALLOC_MB"]) * MB)
    while not (flags.graceful or flags.fast):
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    del ballast
    _exit(EXIT_OK)


def poison(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Claims a document; the document makes it allocate FAKE_ALLOC_MB."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    ballast = b""
    claimed = None
    while not (flags.graceful or flags.fast):
        if claimed is None:
            _, claimed = _claim_one(settings, owner)
            if claimed is not None:
                ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
                ch.beat(force=True)
                ballast = b"x" * (int(os.environ["FAKE_ALLOC_MB"]) * MB)
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    del ballast
    _exit(EXIT_OK)


def bomb_victim(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Crashes (exit 70) as soon as it holds a document and has said so; with nothing
    to claim, it idles, heartbeating: a bomb document, and a healthy worker."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    while not (flags.graceful or flags.fast):
        conn, claimed = _claim_one(settings, owner)
        conn.close()
        if claimed is not None:
            ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
            ch.beat(force=True)
            _exit(EXIT_CRASH)  # the lease is still held: the supervisor releases it
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def idle_crash(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Heartbeats once, holding nothing, then crashes: the daemon's fault, not a document's."""
    ch = _channel(fd)
    ch.beat(force=True)
    _exit(EXIT_CRASH)


def crash_at_start(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    raise RuntimeError("fake worker crashing at start")


def config_error(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    _exit(EXIT_CONFIG)


def stubborn(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Holds a document, heartbeats, and ignores SIGTERM: only SIGKILL ends it."""
    flags = Flags()
    flags.install(term=False)
    ch = _channel(fd)
    claimed = None
    while True:
        if claimed is None:
            _, claimed = _claim_one(settings, owner)
            if claimed is not None:
                ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)


def counter(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Reports one more finished document with every heartbeat."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    while not (flags.graceful or flags.fast):
        ch.documents_done += 1
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def stuck(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Holds a document in one stage forever, heartbeating, deaf to SIGINT."""
    flags = Flags()
    flags.install(intr=False)
    ch = _channel(fd)
    claimed = None
    while not flags.graceful:
        if claimed is None:
            _, claimed = _claim_one(settings, owner)
            if claimed is not None:
                ch.document_id, ch.stage = str(claimed.id), str(claimed.status)
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def profiler(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """On SIGUSR1, writes the file the profile request names (as memray would)."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    while not (flags.graceful or flags.fast):
        if flags.profile:
            flags.profile = False
            request = settings.home / "profiles" / f"request-{slot}.json"
            path = json.loads(request.read_text())["path"]
            with open(path, "w") as fh:
                fh.write(f"fake capture by worker {slot}\n")
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def pipeline(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """Moves every claimable document straight to complete (no real stages)."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    conn = connect(database_url(settings), autocommit=True)
    while not (flags.graceful or flags.fast):
        claimed = jobs.claim(
            conn,
            owner,
            limit=1,
            lease_seconds=settings.lease_seconds,
        )
        for c in claimed:
            status = c.status
            ch.document_id = str(c.id)
            while status is not Status.COMPLETE:
                ch.stage = str(status)
                ch.beat(force=True)
                nxt = SUCCESS_OF[status][0]
                with conn.transaction():
                    jobs.transition(
                        conn,
                        c.id,
                        owner,
                        from_status=status,
                        to_status=nxt,
                        keep_lease=nxt is not Status.COMPLETE,
                        lease_seconds=settings.lease_seconds,
                    )
                    status = nxt
                    if status in ACTIVE_OF:
                        active = ACTIVE_OF[status]
                        jobs.transition(
                            conn,
                            c.id,
                            owner,
                            from_status=status,
                            to_status=active,
                            keep_lease=True,
                            lease_seconds=settings.lease_seconds,
                            event="stage_started",
                        )
                        status = active
            ch.documents_done += 1
            ch.document_id = ch.stage = None
        ch.beat(force=True)
        if not claimed:
            time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def http_idle(settings: Settings, fd: int) -> NoReturn:
    """Stands in for the HTTP child: heartbeats, SIGTERM ends it."""
    flags = Flags()
    flags.install()
    ch = _channel(fd)
    while not (flags.graceful or flags.fast):
        ch.beat(force=True)
        time.sleep(BEAT_SECONDS)
    _exit(EXIT_OK)


def hanging_parser(settings: Settings, slot: int, owner: str, fd: int) -> NoReturn:
    """The real worker, whose PDF parser hangs on its first page as if stuck in C code:
    deaf to SIGINT (blocked, as a signal is while PDFium runs), so only SIGKILL ends it."""
    from ingestd.shared.parsers import pdf
    from ingestd.workers.process import worker_main

    def hang(_pdf: Any, _index: int) -> str:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        while True:
            time.sleep(3600)

    pdf._page_text = hang  # type: ignore[assignment]
    worker_main(settings, slot, owner, fd)
