"""Process titles, so ``ps`` and ``top`` say what each ingestd process is doing.

The supervisor sets its own title and a worker's first one (right after fork).
From then on a worker sets its own (``setproctitle.setproctitle`` directly: workers
do not import ``supervisor``), in the format ``worker_title`` produces:
``ingestd: worker 2 doc=abc12345 stage=embedding`` or ``ingestd: worker 2 idle``.
"""

from __future__ import annotations

import setproctitle

PREFIX = "ingestd:"


def supervisor_title(workers: int, state: str = "running") -> str:
    plural = "worker" if workers == 1 else "workers"
    title = f"{PREFIX} supervisor [{workers} {plural}]"
    return title if state == "running" else f"{title} {state}"


def worker_title(slot: int, document_id: str | None = None, stage: str | None = None) -> str:
    if document_id is None:
        return f"{PREFIX} worker {slot} idle"
    title = f"{PREFIX} worker {slot} doc={document_id[:8]}"
    return f"{title} stage={stage}" if stage else title


def http_title() -> str:
    return f"{PREFIX} http"


def set_title(title: str) -> None:
    setproctitle.setproctitle(title)


def is_supervisor_title(cmdline: list[str]) -> bool:
    """Whether a process's command line (as psutil reports it) is an ingestd supervisor's."""
    return " ".join(cmdline).startswith(f"{PREFIX} supervisor")
