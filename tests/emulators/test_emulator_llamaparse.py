"""The LlamaParse emulator over real sockets: v2 and v1 flows, limits, faults, and signed
webhook deliveries to a real receiver (retries, duplicates, delays, never)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import sys
import time
import types
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.emulators import (
    LlamaParseEmulator,
    LlamaParseEmulatorConfig,
    LlamaParseFault,
    call,
    running,
)

from .conftest import FakeClock

KEY = "llx-emulator-key"
SECRET = "whsec-test-secret"
DOC = "# Title\n\nSome *markdown* body with ünïcödé.\n"
T = 10.0  # safety-net timeout for every wait; never reached when things work


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await test()

    asyncio.run(bounded())


class Receiver:
    """A webhook endpoint that answers the given statuses in turn (then 200) and lets the test
    wait for the n-th delivery."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.got: list[tuple[dict[str, str], bytes, int]] = []
        self._changed = asyncio.Condition()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.statuses.pop(0) if self.statuses else 200
        self.got.append((dict(request.headers), body, status))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(T), self._changed:
            await self._changed.wait_for(lambda: len(self.got) >= n)

    def events(self, event_type: str) -> list[tuple[dict[str, str], bytes, int]]:
        return [g for g in self.got if json.loads(g[1]).get("event_type") == event_type]


@asynccontextmanager
async def services(
    config: LlamaParseEmulatorConfig | None = None,
    statuses: list[int] | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[tuple[LlamaParseEmulator, Receiver, aiohttp.ClientSession]]:
    kwargs = {} if clock is None else {"clock": clock}
    em = LlamaParseEmulator(config, **kwargs)
    receiver = Receiver(statuses)
    await em.start()
    await receiver.start()
    session = aiohttp.ClientSession()
    try:
        yield em, receiver, session
    finally:
        await session.close()
        await em.stop()
        await receiver.stop()


def auth(key: str | None = KEY) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def hook(url: str, events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"webhook_url": url, "webhook_signing_secret": SECRET, **extra}
    if events is not None:
        conf["webhook_events"] = events
    return conf


async def upload_v2(
    session: aiohttp.ClientSession,
    em: LlamaParseEmulator,
    data: bytes = DOC.encode(),
    name: str = "doc.md",
    content_type: str = "text/markdown",
    webhooks: list[dict[str, Any]] | None = None,
    key: str | None = KEY,
) -> tuple[int, dict[str, str], Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=content_type)
    if webhooks is not None:
        form.add_field("configuration", json.dumps({"webhook_configurations": webhooks}))
    async with session.post(em.url + "/api/v2/parse/upload", data=form, headers=auth(key)) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def get_json(
    session: aiohttp.ClientSession, url: str, key: str | None = KEY
) -> tuple[int, Any]:
    async with session.get(url, headers=auth(key)) as resp:
        return resp.status, await resp.json()


def assert_signed(headers: dict[str, str], body: bytes) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["LC-Signature"], expected)


def test_v2_flow_with_signed_webhook() -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(hold_jobs=True)
        async with services(config) as (em, receiver, session):
            webhooks = [hook(receiver.url, ["parse.success"], webhook_headers={"X-Token": "tok-1"})]
            status, _, job = await upload_v2(session, em, webhooks=webhooks)
            assert status == 200
            assert job["status"] == "PENDING"
            assert set(job) >= {"id", "project_id", "status", "created_at", "error_message"}

            url = f"{em.url}/api/v2/parse/{job['id']}?expand=markdown"
            status, polled = await get_json(session, url)
            assert status == 200
            assert polled["job"]["status"] in ("PENDING", "RUNNING")
            assert "markdown" not in polled
            assert receiver.got == []

            em.release(job["id"])
            await em.wait_job(job["id"], T)
            status, done = await get_json(session, url + ",markdown_full,text")
            assert done["job"]["status"] == "COMPLETED"
            page = done["markdown"]["pages"][0]
            assert page == {"page_number": 1, "markdown": DOC, "success": True}
            assert done["markdown_full"] == DOC
            assert done["text"]["pages"][0]["text"] == DOC

            await receiver.wait_for(1)
            headers, raw, _ = receiver.got[0]
            assert_signed(headers, raw)
            assert headers["X-Token"] == "tok-1"
            event = json.loads(raw)
            assert event["event_type"] == "parse.success"
            assert event["event_id"].startswith("evt_")
            assert event["data"]["job_id"] == job["id"]
            assert event["data"]["status"] == "COMPLETED"
            assert "markdown" not in event["data"]
            assert abs(event["timestamp"] - time.time()) < 60
            await em.wait_idle(T)
            assert em.stats.uploads == 1
            assert em.stats.polls == 2
            assert [d.status for d in em.stats.deliveries] == [200]

    run(body)


def test_v2_failed_job_sends_parse_error_and_a_tampered_body_fails_verification() -> None:
    async def body() -> None:
        async with services() as (em, receiver, session):
            em.inject(LlamaParseFault.JOB_FAILED)
            webhooks = [hook(receiver.url, ["parse.success", "parse.error"])]
            _, _, job = await upload_v2(session, em, webhooks=webhooks)
            await em.wait_job(job["id"], T)
            _, polled = await get_json(
                session, f"{em.url}/api/v2/parse/{job['id']}?expand=markdown"
            )
            assert polled["job"]["status"] == "FAILED"
            assert polled["job"]["error_message"] == em.config.failure_message
            assert "markdown" not in polled
            await receiver.wait_for(1)
            headers, raw, _ = receiver.got[0]
            event = json.loads(raw)
            assert event["event_type"] == "parse.error"
            assert event["data"]["error_message"] == em.config.failure_message
            assert_signed(headers, raw)
            with pytest.raises(AssertionError):
                assert_signed(headers, raw.replace(b"FAILED", b"COMPLETED"))
            assert em.stats.jobs_failed == 1

    run(body)


def test_v1_flow_with_webhook_url() -> None:
    async def body() -> None:
        async with services(LlamaParseEmulatorConfig(hold_jobs=True)) as (em, receiver, session):
            form = aiohttp.FormData()
            form.add_field("file", DOC.encode(), filename="notes.md", content_type="text/markdown")
            form.add_field("webhook_url", receiver.url)
            async with session.post(
                em.url + "/api/parsing/upload", data=form, headers=auth()
            ) as resp:
                assert resp.status == 200
                job = await resp.json()
            assert job["status"] == "PENDING"
            base = f"{em.url}/api/parsing/job/{job['id']}"
            status, early = await get_json(session, base + "/result/markdown")
            assert status == 400 and "not complete" in early["detail"]
            _, polled = await get_json(session, base)
            assert polled == {"id": job["id"], "status": "PENDING"}

            em.release()
            await em.wait_job(job["id"], T)
            _, polled = await get_json(session, base)
            assert polled["status"] == "SUCCESS"
            _, md = await get_json(session, base + "/result/markdown")
            assert md["markdown"] == DOC
            assert md["job_metadata"]["job_pages"] == 1
            _, text = await get_json(session, base + "/result/text")
            assert text["text"] == DOC

            await receiver.wait_for(1)
            headers, raw, _ = receiver.got[0]
            payload = json.loads(raw)
            assert payload["md"] == DOC and payload["txt"] == DOC
            assert payload["job_id"] == job["id"] and payload["status"] == "SUCCESS"
            assert payload["json"][0]["page"] == 1
            assert "LC-Signature" not in headers  # v1 documents no signature

    run(body)


def test_v1_failed_job_is_error() -> None:
    async def body() -> None:
        async with services() as (em, _, session):
            em.inject(LlamaParseFault.JOB_FAILED)
            form = aiohttp.FormData()
            form.add_field("file", b"text", filename="a.txt", content_type="text/plain")
            async with session.post(em.url + "/api/parsing/upload", data=form, headers=auth()) as r:
                job = await r.json()
            await em.wait_job(job["id"], T)
            base = f"{em.url}/api/parsing/job/{job['id']}"
            _, polled = await get_json(session, base)
            assert polled["status"] == "ERROR"
            assert polled["error_message"] == em.config.failure_message
            status, result = await get_json(session, base + "/result/markdown")
            assert status == 400 and "Job failed" in result["detail"]

    run(body)


def test_auth_and_unknown_jobs() -> None:
    async def body() -> None:
        async with services() as (em, _, session):
            for key in (None, "llx-wrong"):
                status, _, reply = await upload_v2(session, em, key=key)
                assert status == 401 and "detail" in reply
                status, _ = await get_json(session, f"{em.url}/api/v2/parse/x", key=key)
                assert status == 401
            status, reply = await get_json(session, f"{em.url}/api/v2/parse/nope")
            assert status == 404 and reply == {"detail": "Job not found"}
            status, _ = await get_json(session, f"{em.url}/api/parsing/job/nope")
            assert status == 404
            form = aiohttp.FormData()
            form.add_field("other", "x")
            async with session.post(
                em.url + "/api/v2/parse/upload", data=form, headers=auth()
            ) as resp:
                assert resp.status == 400
            assert em.stats.uploads == 0
            assert em.stats.count(401) == 4

    run(body)


def test_upload_rate_limit_window_and_forced_429(clock: FakeClock) -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(upload_limit=2, upload_window=10.0)
        async with services(config, clock=clock) as (em, _, session):
            assert (await upload_v2(session, em))[0] == 200
            clock.advance(4)
            assert (await upload_v2(session, em))[0] == 200
            status, headers, reply = await upload_v2(session, em)
            assert status == 429
            assert headers["Retry-After"] == "6"  # the first upload leaves the window at t+10
            assert "detail" in reply
            clock.advance(6)
            assert (await upload_v2(session, em))[0] == 200

            em.config.upload_limit = None
            em.config.forced_retry_after = 3
            em.inject(LlamaParseFault.RATE_LIMIT)
            status, headers, _ = await upload_v2(session, em)
            assert status == 429 and headers["Retry-After"] == "3"
            assert (await upload_v2(session, em))[0] == 200
            assert em.stats.uploads == 4
            assert em.stats.count(429) == 2

    run(body)


def test_out_of_credits_402() -> None:
    async def body() -> None:
        async with services(LlamaParseEmulatorConfig(credits=1)) as (em, _, session):
            _, _, job = await upload_v2(session, em)
            await em.wait_job(job["id"], T)
            assert em.config.credits == 0
            status, _, reply = await upload_v2(session, em)
            assert status == 402 and "credits" in reply["detail"]

            em.config.credits = None
            em.inject(LlamaParseFault.OUT_OF_CREDITS)
            assert (await upload_v2(session, em))[0] == 402
            assert (await upload_v2(session, em))[0] == 200

    run(body)


def test_webhook_retried_after_receiver_500s() -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(webhook_backoff=0.01)
        async with services(config, statuses=[500, 503]) as (em, receiver, session):
            _, _, job = await upload_v2(
                session, em, webhooks=[hook(receiver.url, ["parse.success"])]
            )
            await receiver.wait_for(3)
            await em.wait_idle(T)
            bodies = {raw for _, raw, _ in receiver.got}
            assert len(bodies) == 1  # every retry carries the same signed body
            for headers, raw, _ in receiver.got:
                assert_signed(headers, raw)
            records = em.stats.deliveries
            assert [(d.attempt, d.status) for d in records] == [(1, 500), (2, 503), (3, 200)]
            assert len(em.stats.delivered(job["id"], "parse.success")) == 1
            assert em.stats.webhooks_abandoned == 0

    run(body)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_receiver_is_retried_then_abandoned() -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(webhook_backoff=0.01, webhook_max_attempts=3)
        async with services(config) as (em, _, session):
            dead = f"http://127.0.0.1:{unused_port()}/hook"
            _, _, job = await upload_v2(session, em, webhooks=[hook(dead, ["parse.success"])])
            await em.wait_idle(T)
            records = em.stats.deliveries
            assert [d.attempt for d in records] == [1, 2, 3]
            assert all(d.status is None and d.error for d in records)
            assert em.stats.webhooks_abandoned == 1
            assert em.jobs[job["id"]].status == "COMPLETED"

    run(body)


def test_duplicate_delivery_sends_identical_bytes_twice() -> None:
    async def body() -> None:
        async with services() as (em, receiver, session):
            em.inject(LlamaParseFault.WEBHOOK_DUPLICATE)
            await upload_v2(session, em, webhooks=[hook(receiver.url, ["parse.success"])])
            await receiver.wait_for(2)
            await em.wait_idle(T)
            (h1, b1, _), (h2, b2, _) = receiver.got
            assert b1 == b2
            assert h1["LC-Signature"] == h2["LC-Signature"]
            assert [d.duplicate for d in em.stats.deliveries] == [False, True]
            assert len(receiver.got) == 2

    run(body)


def test_webhook_that_never_comes() -> None:
    async def body() -> None:
        async with services() as (em, receiver, session):
            em.inject(LlamaParseFault.WEBHOOK_NEVER)
            _, _, job = await upload_v2(
                session, em, webhooks=[hook(receiver.url, ["parse.success"])]
            )
            await em.wait_job(job["id"], T)
            await em.wait_idle(T)
            _, polled = await get_json(session, f"{em.url}/api/v2/parse/{job['id']}")
            assert polled["job"]["status"] == "COMPLETED"
            assert receiver.got == []
            assert em.stats.deliveries == []
            assert em.stats.webhooks_suppressed == 1

    run(body)


def test_delayed_delivery() -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(webhook_delay=0.2)
        async with services(config) as (em, receiver, session):
            em.inject(LlamaParseFault.WEBHOOK_DELAYED)
            _, _, job = await upload_v2(
                session, em, webhooks=[hook(receiver.url, ["parse.success"])]
            )
            finished = await em.wait_job(job["id"], T)
            assert receiver.got == []  # held back for webhook_delay after completion
            await receiver.wait_for(1)
            await em.wait_idle(T)
            assert finished.finished_at is not None
            assert em.stats.deliveries[0].time - finished.finished_at >= 0.19

    run(body)


def test_event_subscription_filters() -> None:
    async def body() -> None:
        async with services() as (em, receiver, session):
            everything = {"webhook_url": receiver.url}  # no events listed: all of them
            only_errors = hook(receiver.url, ["parse.error"])
            _, _, job = await upload_v2(session, em, webhooks=[everything, only_errors])
            await em.wait_job(job["id"], T)
            await em.wait_idle(T)
            kinds = [json.loads(raw)["event_type"] for _, raw, _ in receiver.got]
            assert sorted(kinds) == ["parse.pending", "parse.success"]
            assert all("LC-Signature" not in h for h, _, _ in receiver.got)  # no secret given

    run(body)


def test_include_markdown_in_webhook() -> None:
    async def body() -> None:
        config = LlamaParseEmulatorConfig(webhook_include_markdown=True)
        async with services(config) as (em, receiver, session):
            await upload_v2(session, em, webhooks=[hook(receiver.url, ["parse.success"])])
            await receiver.wait_for(1)
            assert json.loads(receiver.got[0][1])["data"]["markdown"] == DOC

    run(body)


def test_bad_webhook_configuration_is_rejected() -> None:
    async def body() -> None:
        async with services() as (em, _, session):
            status, _, reply = await upload_v2(session, em, webhooks=[{"webhook_url": "ftp://x"}])
            assert status == 422 and "detail" in reply
            form = aiohttp.FormData()
            form.add_field("file", b"x", filename="a.md", content_type="text/markdown")
            form.add_field("configuration", "{not json")
            async with session.post(
                em.url + "/api/v2/parse/upload", data=form, headers=auth()
            ) as resp:
                assert resp.status == 400
            assert em.stats.uploads == 0

    run(body)


@pytest.fixture
def fake_parsers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """A stand-in for shared.parsers that records what the emulator asked of it."""
    calls: list[tuple[str, str]] = []
    module = types.ModuleType("ingestd.shared.parsers")

    def detect_mime(filename: str, head: bytes) -> str:
        calls.append(("detect", filename))
        if head.startswith(b"BAD"):
            raise ValueError("unsupported binary file")
        return "application/pdf"

    def iter_blocks(stream: Any, mime_type: str) -> Iterator[str]:
        calls.append(("blocks", mime_type))
        data = stream.read()
        yield "# Parsed\n"
        yield f"{len(data)} bytes"

    module.detect_mime = detect_mime  # type: ignore[attr-defined]
    module.iter_blocks = iter_blocks  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ingestd.shared.parsers", module)
    yield calls


def test_non_text_files_go_through_shared_parsers(fake_parsers: list[tuple[str, str]]) -> None:
    async def body() -> None:
        async with services() as (em, _, session):
            pdf = b"%PDF-1.7 fake"
            _, _, ok = await upload_v2(session, em, pdf, "a.pdf", "application/pdf")
            _, _, bad = await upload_v2(session, em, b"BAD\x00", "b.bin", "application/x-bin")
            _, _, utf = await upload_v2(session, em, b"\xff\xfe", "c.md", "text/markdown")
            for job_id in (ok["id"], bad["id"], utf["id"]):
                await em.wait_job(job_id, T)
            assert em.jobs[ok["id"]].markdown == f"# Parsed\n{len(pdf)} bytes"
            assert em.jobs[bad["id"]].status == "FAILED"
            assert "unsupported binary file" in (em.jobs[bad["id"]].error_message or "")
            assert em.jobs[utf["id"]].error_message == "The file is not valid UTF-8 text."
            assert ("blocks", "application/pdf") in fake_parsers
            assert ("detect", "c.md") not in fake_parsers  # markdown never needs a parser

    run(body)


def test_processing_delay_and_seeded_fault_rates() -> None:
    async def statuses(seed: int) -> list[int]:
        config = LlamaParseEmulatorConfig(
            fault_rates={LlamaParseFault.OUT_OF_CREDITS: 0.5}, seed=seed, upload_limit=None
        )
        async with services(config) as (em, _, session):
            return [(await upload_v2(session, em))[0] for _ in range(16)]

    async def body() -> None:
        first, second = await statuses(3), await statuses(3)
        assert first == second and set(first) == {200, 402}

        async with services(LlamaParseEmulatorConfig(processing_delay=0.05)) as (em, _, session):
            _, _, job = await upload_v2(session, em)
            done = await em.wait_job(job["id"], T)
            assert done.status == "COMPLETED"
            assert (done.updated_at - done.created_at).total_seconds() >= 0.04

    run(body)


def test_runner_drives_the_emulator_from_a_sync_test() -> None:
    config = LlamaParseEmulatorConfig(hold_jobs=True)
    with running(LlamaParseEmulator(config)) as em:
        boundary = "XyZ"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.md"\r\nContent-Type: text/markdown\r\n\r\n{DOC}\r\n--{boundary}--\r\n'
        ).encode()
        req = urllib.request.Request(
            em.url + "/api/v2/parse/upload",
            data=payload,
            headers={**auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=T) as resp:
            job = json.loads(resp.read())
        em.release()  # from this thread, onto the emulator's loop
        done = call(em, em.wait_job(job["id"], T))
        assert done.markdown == DOC
