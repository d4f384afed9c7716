"""The worker process's life after fork: set everything up fresh, run, exit.

Nothing that holds a socket or a lock is inherited: ``shared.child.run_child`` sets up
logging, metrics and Sentry (as for the HTTP child); the database connections and the
embedder's HTTP client are created here.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import setproctitle

from ingestd.shared.child import Role, Started, run_child
from ingestd.shared.db.connect import database_url
from ingestd.shared.embedders.setup import build_embedder
from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.logs import get_logger
from ingestd.workers.base import Worker


def preload(settings: Settings) -> None:
    """What a parent loads once before forking workers, to share it copy-on-write:
    the BPE ranks (~38 MB) and the OpenAI client library (1-3 s of imports each
    worker would otherwise pay at every start). Nothing here opens a socket."""
    from ingestd.shared.embedders.setup import choose
    from ingestd.shared.tokens import get_encoding

    get_encoding()
    if choose(settings) == "openai":
        import ingestd.shared.embedders.openai  # noqa: F401
    # What is loaded now lives as long as the process: the cyclic collector need not
    # walk it again in every worker, and not writing to its objects' headers keeps
    # their pages shared with the parent.
    gc.freeze()


def worker_main(settings: Settings, slot: int, owner: str, channel_fd: int | None) -> NoReturn:
    run_child(
        Role("worker", slot, tune_malloc=True),
        settings,
        channel_fd,
        lambda started: _main(started, slot, owner),
    )


def _main(started: Started, slot: int, owner: str) -> int:
    settings, metrics = started.settings, started.metrics
    log = get_logger("ingestd.worker")

    embedder: Any = None

    def embedder_factory() -> Any:
        nonlocal embedder
        if embedder is None:
            embedder = build_embedder(settings, metrics)
        return embedder

    def set_title(what: str) -> None:
        setproctitle.setproctitle(f"ingestd: worker {slot} {what}")

    worker = Worker(
        settings,
        url=database_url(settings),
        owner=owner,
        slot=slot,
        metrics=metrics,
        channel=started.channel,
        embedder_factory=embedder_factory,
        set_title=set_title,
    )

    def on_term(signum: int, _frame: FrameType | None) -> None:
        worker.stop.request("recycle" if signum == signal.SIGUSR2 else "shutdown")

    def on_int(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_usr1(_signum: int, _frame: FrameType | None) -> None:
        worker.profile_next = profile_path(settings, slot)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR2, on_term)
    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGQUIT, on_int)
    signal.signal(signal.SIGUSR1, on_usr1)

    log.info("worker started", owner=owner)
    try:
        return worker.run()
    except KeyboardInterrupt:
        log.warning("fast stop")
        return EXIT_OK
    finally:
        from ingestd.workers.loop import close_runner

        close_runner(embedder)
        worker.close()


def profile_path(settings: Settings, slot: int) -> Path:
    """Where the next document's memray capture goes: named in the request file the
    supervisor wrote, else a timestamped name under INGESTD_HOME/profiles."""
    request = settings.home / "profiles" / f"request-{slot}.json"
    try:
        wanted = json.loads(request.read_text())["path"]
        return Path(wanted)
    except (OSError, ValueError, KeyError):
        stamp = time.strftime("%Y%m%dT%H%M%S")
        return settings.home / "profiles" / f"worker{slot}-{stamp}-{os.getpid()}.bin"
