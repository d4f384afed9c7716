"""The running daemon's API on its local Unix socket, as the CLI reaches it.

The HTTP child serves the same app on ``INGESTD_HOME/run/api.sock`` (mode 0600): the
file's permission is the credential, as with docker.sock. A plain blocking client
(``http.client``) keeps the CLI's start-up light.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ingestd.shared.settings import Settings

SOCKET_NAME = "api.sock"
# The daemon's first search may load the local model (~24 s); later ones take ms.
TIMEOUT_SECONDS = 120.0
# What "nobody is listening" looks like: no socket file, or a file nobody accepts on.
_NOT_SERVING = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK})


def socket_path(settings: Settings) -> Path:
    return settings.home / "run" / SOCKET_NAME


class NoDaemon(Exception):
    """Nothing serves the local socket."""


class ApiError(Exception):
    """The daemon answered with an error (or stopped answering: 503)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


def get_json(settings: Settings, path: str, query: dict[str, Any]) -> Any:
    """GET ``path`` from the daemon: the JSON body, ``ApiError`` for a problem answer,
    ``NoDaemon`` when nothing listens on the socket."""
    conn = _UnixConnection(socket_path(settings), TIMEOUT_SECONDS)
    try:
        try:
            conn.request("GET", f"{path}?{urlencode(query)}")
        except OSError as exc:
            if exc.errno in _NOT_SERVING:
                raise NoDaemon(str(socket_path(settings))) from None
            raise ApiError(503, f"cannot reach the daemon: {exc}") from None
        try:
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(503, f"the daemon did not answer: {exc or type(exc).__name__}") from None
    finally:
        conn.close()
    if response.status >= 400:
        try:
            detail = json.loads(body).get("detail", "")
        except (ValueError, AttributeError):
            detail = body[:200].decode("utf-8", "replace")
        raise ApiError(response.status, str(detail))
    return json.loads(body)


def search(settings: Settings, query: str, k: int) -> list[dict[str, Any]]:
    return list(get_json(settings, "/v1/search", {"q": query, "k": k})["results"])
