"""Scratch directories for benchmarks and profiles, removed when the process exits.

A pipeline run leaves ~1 GB behind (the embedded server's data and WAL, the
generated documents); a few dozen runs would fill a disk.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, deleted at exit by the process that made it.

    Make it before starting an embedded server in it: exit handlers run last
    registered first, so the server (pgserver's handler) stops before its data
    directory goes. Forked workers leave through ``os._exit`` and run no handlers.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
