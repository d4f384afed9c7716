"""The embedded PostgreSQL + pgvector server (``pgserver``) kept under INGESTD_HOME.

pgserver starts one postmaster per data directory and lets several processes on
the machine share it: each registers its pid, and the server stops when the
last registered process exits. It listens on a Unix socket only.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from ingestd.shared.errors import ConfigError

_log = logging.getLogger(__name__)
_SERVERS: dict[Path, object] = {}


def embedded_url(home: Path, database: str = "postgres") -> str:
    """Start (or join) the embedded server and return its connection URL."""
    pgdata = (home / "pg").resolve()
    server = _SERVERS.get(pgdata)
    if server is None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI);
                # pgserver then keeps its lock file under /tmp, which is fine.
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigError(
                "the embedded database needs the 'pgserver' package; "
                "install ingestd with pip, or set INGESTD_DATABASE_URL"
            ) from exc
        # Made here because pgserver's own mkdir races when two processes start together.
        pgdata.mkdir(parents=True, exist_ok=True)
        try:
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise ConfigError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc} "
                f"(its log is {pgdata / 'log'})"
            ) from exc
        _SERVERS[pgdata] = server
        _log.info("embedded postgres ready", extra={"pgdata": str(pgdata)})
    return server.get_uri(database)  # type: ignore[attr-defined]


def release_embedded(home: Path) -> None:
    """Let go of the embedded server under ``home`` before this process exits (as a
    benchmark does between runs): it stops now if no other process still uses it."""
    server = _SERVERS.pop((home / "pg").resolve(), None)
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]
