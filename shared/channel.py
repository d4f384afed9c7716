"""The one-way pipe a worker uses to tell its supervisor it is alive and what it does.

Messages are newline-delimited JSON objects, each well under PIPE_BUF (4096
bytes) so a write is atomic. Writes never block: if the supervisor is slow to
read, a heartbeat is dropped rather than stalling the worker, and the next one
carries the same facts.

Fields: ``hb`` (worker's monotonic clock), ``doc`` (document id or null),
``stage`` (status name or null), ``docs`` (documents finished by this process),
``event`` (optional: "claimed", "finished", "batch", "stopping"), ``budget``
(optional: the current stage's time budget, ``shared.budget``: ``seconds``, ``blame``,
``basis`` and ``done``, how far the input was read).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


class WorkerChannel:
    """Worker side. Throttled: at most one heartbeat per ``min_interval`` unless
    something changed (new document or stage)."""

    def __init__(self, fd: int | None, *, min_interval: float = 0.5) -> None:
        self._fd = fd
        self._min_interval = min_interval
        self._last_sent = 0.0
        self._last_key: tuple[Any, ...] = ()
        self.document_id: str | None = None
        self.stage: str | None = None
        self.documents_done = 0
        self.budget: dict[str, Any] | None = None
        if fd is not None:
            os.set_blocking(fd, False)

    def beat(self, *, event: str | None = None, force: bool = False) -> None:
        if self._fd is None:
            return
        now = time.monotonic()
        budget = self.budget
        # A new budget is news; how far the input was read rides on the next beat.
        limit = (budget["seconds"], budget["blame"]) if budget else None
        key = (self.document_id, self.stage, self.documents_done, limit)
        if (
            not force
            and event is None
            and key == self._last_key
            and (now - self._last_sent < self._min_interval)
        ):
            return
        msg: dict[str, Any] = {
            "hb": now,
            "doc": self.document_id,
            "stage": self.stage,
            "docs": self.documents_done,
        }
        if event:
            msg["event"] = event
        if budget:
            msg["budget"] = budget
        try:
            os.write(self._fd, (json.dumps(msg) + "\n").encode())
        except BlockingIOError:
            return  # supervisor busy; the next beat says the same
        except BrokenPipeError:
            return  # supervisor gone; the worker's own stop logic handles that
        self._last_sent = now
        self._last_key = key


class ChannelReader:
    """Supervisor side: accumulate bytes from a non-blocking pipe, yield messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._buf = b""

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """Return (messages, eof)."""
        eof = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                eof = True
                break
            self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        msgs = []
        for line in lines:
            try:
                msgs.append(json.loads(line))
            except ValueError:
                continue  # a torn line can only come from a dying worker
        return msgs, eof
