"""The ingestd HTTP app on a real loopback port (port 0), on its own loop in a thread, and a
small synchronous HTTP client for tests. Shared by tests/supervisor/http and
tests/workers/parse_remote."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from multidict import CIMultiDict

from ingestd.shared.db import tokens as db_tokens
from ingestd.shared.llamaparse import sign
from ingestd.shared.settings import Settings
from ingestd.supervisor.http.app import build_app, make_runner, start_local_site
from ingestd.supervisor.http.limits import API, GUARD, WEBHOOK, GuardedSite
from ingestd.supervisor.local_api import socket_path
from ingestd.supervisor.tokens import digest, split
from tests import polling
from tests.emulators import LlamaParseEmulator, LlamaParseEmulatorConfig, running
from tests.emulators.llamaparse_api import DEFAULT_API_KEY

SECRET = "whsec-test-0123456789abcdef"
JOB_PARKED_BY = "job-parked-by-test"
# The admin token the `db` fixture stores and `request` sends unless told otherwise.
ADMIN_TOKEN = "ingestd_00000000ad01_" + "harness-admin-secret".ljust(43, "x")


def add_token(
    conn: psycopg.Connection[Any],
    token: str,
    *,
    scope: str = "admin",
    name: str | None = None,
    max_upload_mb: int | None = None,
) -> None:
    """Store a token whose text the test chose (``ingestd_<12 hex>_<43 chars>``)."""
    parts = split(token)
    assert parts is not None, token
    db_tokens.insert(
        conn,
        token_id=parts[0],
        name=name or f"test-{parts[0]}",
        scope=scope,
        secret_sha256=digest(parts[1]),
        expires_at=None,
        max_upload_mb=max_upload_mb,
    )


class AppServer:
    """``build_app`` served on 127.0.0.1:0; use with ``tests.emulators.runner.running``."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        local_socket: bool = False,
        webhook_listener: bool = False,
    ) -> None:
        self.settings = settings
        self.db_url = url
        self.local_socket = local_socket
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._webhook_listener = webhook_listener
        self.url = ""
        self.webhook_url = ""  # the webhook-only listener, when asked for
        self.app: web.Application | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.app = build_app(self.settings, url=self.db_url)
        runner = make_runner(self.app)
        await runner.setup()
        self._runner = runner
        # The daemon's own sites: each connection passes the connection guard.
        site = GuardedSite(runner, "127.0.0.1", 0, guard=self.app[GUARD], listener=API)
        await site.start()
        self.url = f"http://127.0.0.1:{site.bound_port}"
        if self._webhook_listener:
            hook = GuardedSite(runner, "127.0.0.1", 0, guard=self.app[GUARD], listener=WEBHOOK)
            await hook.start()
            self.webhook_url = f"http://127.0.0.1:{hook.bound_port}"
        if self.local_socket:
            await start_local_site(runner, socket_path(self.settings))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    method: str,
    url: str,
    *,
    data: Any = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
    token: str | None = ADMIN_TOKEN,
) -> Reply:
    """One HTTP request; ``data`` may be bytes, aiohttp.FormData or a callable returning
    an async iterator of bytes (sent chunked, or with the Content-Length given in headers).
    ``token`` is sent as ``Authorization: Bearer`` unless None or headers carry their own."""
    headers = dict(headers or {})
    if token is not None and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {token}"

    async def go() -> Reply:
        payload = data() if callable(data) else data
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                url,
                data=payload,
                json=json_body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp,
        ):
            body = await resp.read()
            return Reply(resp.status, CIMultiDict(resp.headers), body)

    return asyncio.run(go())


def zeros(total: int, piece: int = 1 << 20) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        block = b"\0" * piece
        while sent < total:
            n = min(piece, total - sent)
            yield block[:n]
            sent += n

    return gen


def multipart(
    data: bytes, filename: str = "doc.txt", *, field: str = "file"
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body written by hand, so the test controls every byte
    (aiohttp's FormData percent-encodes file names)."""
    boundary = "ingestd-test-" + uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nignored\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}";'
            f' filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def event_body(
    job_id: str,
    event_type: str = "parse.success",
    *,
    timestamp: float | None = None,
    error_message: str | None = None,
) -> bytes:
    status = "COMPLETED" if event_type == "parse.success" else "FAILED"
    payload = {
        "event_id": "evt_" + uuid.uuid4().hex,
        "event_type": event_type,
        "timestamp": int(time.time() if timestamp is None else timestamp),
        "data": {
            "job_id": job_id,
            "project_id": "proj-test",
            "status": status,
            "error_message": error_message,
        },
    }
    return json.dumps(payload).encode()


def signed_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "LC-Signature": sign(body, secret)}


def park(conn: psycopg.Connection[Any], doc_id: uuid.UUID, job_id: str) -> None:
    """Put a queued document where a worker leaves it after submitting: awaiting_parse,
    no lease, waiting for ``job_id`` (through the legal queued → parsing → awaiting_parse)."""
    with conn.transaction():
        conn.execute(
            "UPDATE documents SET status = 'parsing', lease_owner = 'test',"
            " lease_expires_at = now() + interval '1 minute' WHERE id = %s",
            (doc_id,),
        )
        conn.execute(
            "UPDATE documents SET status = 'awaiting_parse', lease_owner = NULL,"
            " lease_expires_at = NULL, parse_job_id = %s, parse_submitted_at = now(),"
            " run_after = now() + interval '1 hour' WHERE id = %s",
            (job_id, doc_id),
        )


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything a refused request must leave untouched."""
    docs = conn.execute(
        "SELECT id, status, attempts, parse_job_id, run_after, error_class, parsed_segments"
        " FROM documents ORDER BY id"
    ).fetchall()
    counts = conn.execute(
        "SELECT (SELECT count(*) FROM document_events) AS events,"
        " (SELECT count(*) FROM parsed_segments) AS segments,"
        " (SELECT count(*) FROM webhook_deliveries) AS deliveries,"
        " (SELECT count(*) FROM parse_results) AS results,"
        " (SELECT count(*) FROM pg_largeobject_metadata) AS blobs"
    ).fetchone()
    return {"documents": docs, **(counts or {})}


def wait_for(predicate: Callable[[], Any], *, within: float = 20.0, what: str = "condition") -> Any:
    """``tests.polling.wait_until`` under this harness's argument names."""
    return polling.wait_until(predicate, what, within)


# -- fixtures (imported by the conftest of each test directory that uses them) ----------


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The emptied test database, parse results and API tokens included (the shared fixture
    predates them), holding the harness's admin token."""
    conn.execute("TRUNCATE parse_results, api_tokens")
    add_token(conn, ADMIN_TOKEN, name="harness-admin")
    return conn


@pytest.fixture
def llamaparse() -> Iterator[LlamaParseEmulator]:
    config = LlamaParseEmulatorConfig(webhook_backoff=0.05, webhook_backoff_max=0.2)
    with running(LlamaParseEmulator(config)) as emulator:
        yield emulator


@pytest.fixture
def http_settings(
    make_settings: Callable[..., Settings], llamaparse: LlamaParseEmulator
) -> Settings:
    return make_settings(
        parser="llamaparse",
        webhook_secret=SECRET,
        llama_cloud_api_key=DEFAULT_API_KEY,
        llama_cloud_base_url=llamaparse.url,
        heartbeat_timeout_seconds=30,
    )


@pytest.fixture
def server(
    http_settings: Settings, db_url: str, db: psycopg.Connection[Any]
) -> Iterator[AppServer]:
    with running(AppServer(http_settings, db_url)) as app:
        yield app
