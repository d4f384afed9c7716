"""What the HTTP API tells a caller about the server itself: as little as it needs.

- No ``Server: Python/3.x aiohttp/3.x`` banner (it names versions to look up exploits
  for): every response, aiohttp's own parser errors included, says ``Server: ingestd``.
- Below admin scope, JSON answers lose host names, process ids, lease owners (which are
  host:pid), the config file path and the directories of each source path; supervisor
  ids (host:pid) become opaque aliases, stable for this process's life, so a reader can
  still tell supervisors apart and match workers and breakers to them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from aiohttp import web, web_response

from ingestd.shared.jsonout import dumps

SERVER_HEADER = "ingestd"
_DROPPED = frozenset({"hostname", "pid", "owner", "lease_owner", "worker", "config_path"})
_ALIAS_KEY = secrets.token_bytes(16)


def hide_server_banner() -> None:
    # aiohttp has no option for it, and fills it in (setdefault) after every hook an app
    # can reach, also for the 400s its parser answers before any app code runs.
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]


def redact(response: web.StreamResponse) -> None:
    """Rewrite a JSON answer in place for a caller below admin scope."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return
    raw = response.body
    if not isinstance(raw, bytes | bytearray) or not raw:
        return
    response.body = dumps(scrub(json.loads(raw))).encode()


def scrub(value: Any) -> Any:
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _DROPPED or key.endswith("_pid"):
            continue
        if key == "supervisor" and isinstance(item, str):
            out[key] = alias(item)
        elif key == "source" and isinstance(item, str):
            out[key] = item.replace("\\", "/").rsplit("/", 1)[-1]
        elif key == "breakers" and isinstance(item, dict) and _keyed_by_supervisor(item):
            out[key] = {alias(k): scrub(v) for k, v in item.items()}
        else:
            out[key] = scrub(item)
    return out


def _keyed_by_supervisor(breakers: dict[str, Any]) -> bool:
    # /v1/status: {"host:pid": {service: state}}; a worker's own is {service: state}.
    return all(isinstance(v, dict) for v in breakers.values())


def alias(supervisor: str) -> str:
    return "sup-" + hmac.new(_ALIAS_KEY, supervisor.encode(), hashlib.sha256).hexdigest()[:10]
