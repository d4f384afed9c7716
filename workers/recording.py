"""``ingestd profile``: the next run a worker drives, recorded with memray.

memray is an optional extra (``pip install 'ingestd[profile]'``): a worker without it
says so, naming the extra, and goes on with its work unrecorded. A profile request
never crashes a worker, and never passes for recorded when it was not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ingestd.shared.telemetry.logs import get_logger

log = get_logger("ingestd.worker")

EXTRA = "profile"


@contextmanager
def memray_recording(path: Path) -> Iterator[bool]:
    """Record what runs inside with memray into ``path``; yields whether it records."""
    try:
        import memray
    except ImportError as exc:
        log.error(
            "profile request failed: memray is not installed on this host;"
            f" install the optional extra with: pip install 'ingestd[{EXTRA}]'",
            path=str(path),
            extra=EXTRA,
            error=str(exc),
        )
        yield False
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("memray recording started", path=str(path))
    with memray.Tracker(path, native_traces=False):
        yield True
    log.info("memray recording finished", path=str(path))
