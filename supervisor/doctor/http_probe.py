"""One HTTP request with a deadline, for the service checks (standard library only:
no client to set up, and the same proxies and certificates any tool on the host sees)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON, or None when the body is not JSON
    ms: float


class Unreachable(Exception):
    """No HTTP answer at all: refused, unresolvable, timed out, TLS failed."""


def request(
    method: str,
    url: str,
    *,
    token: str,
    payload: Any = None,
    timeout: float,
) -> Reply:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Accept", "application/json")
    req.add_header("User-Agent", "ingestd-doctor")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise Unreachable(_reason(exc.reason)) from None
    except (TimeoutError, ConnectionError) as exc:
        raise Unreachable(_reason(exc)) from None
    ms = (time.monotonic() - started) * 1000
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Reply(status, body, ms)


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def api_message(body: Any) -> str | None:
    """The error text an API put in its body (OpenAI's ``error.message``, FastAPI's
    ``detail``), first line only."""
    text = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            text = error.get("message")
        elif isinstance(body.get("detail"), str):
            text = body["detail"]
    if not isinstance(text, str) or not text.strip():
        return None
    return text.strip().splitlines()[0][:200]
