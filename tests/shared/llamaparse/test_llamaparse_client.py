from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ingestd.shared.errors import (
    AuthError,
    CircuitOpen,
    ConfigError,
    ErrorClass,
    IngestError,
    InvalidInput,
    QuotaExhausted,
    TransientError,
)
from ingestd.shared.llamaparse import (
    SIGNATURE_HEADER,
    JobState,
    LlamaParseClient,
    is_fresh,
    verify,
)
from ingestd.shared.resilience import Backoff, CircuitBreaker
from tests.emulators import (
    LlamaParseEmulator,
    LlamaParseEmulatorConfig,
    LlamaParseFault,
    call,
    running,
)
from tests.emulators.llamaparse_api import DEFAULT_API_KEY

FAST = Backoff(base=0.01, cap=0.05)
DOC = "# Title\n\nSome *markdown* text, ünïcode included.\n"
SECRET = "whsec-0123456789"


@pytest.fixture
def lp() -> Iterator[LlamaParseEmulator]:
    with running(LlamaParseEmulator(LlamaParseEmulatorConfig())) as api:
        yield api


def client(api: LlamaParseEmulator, **kwargs: Any) -> LlamaParseClient:
    kwargs.setdefault("backoff", FAST)
    kwargs.setdefault("timeout", 10.0)
    return LlamaParseClient(kwargs.pop("api_key", DEFAULT_API_KEY), base_url=api.url, **kwargs)


def wait_job(api: LlamaParseEmulator, job_id: str) -> None:
    call(api, api.wait_job(job_id, within=10.0))


@pytest.mark.parametrize("kind", ["bytes", "path", "stream"])
def test_upload_status_fetch(lp: LlamaParseEmulator, kind: str, tmp_path: Path) -> None:
    source: Any
    if kind == "bytes":
        source = DOC.encode()
    elif kind == "path":
        source = tmp_path / "doc.md"
        source.write_text(DOC, encoding="utf-8")
    else:
        source = io.BytesIO(b"junk-prefix" + DOC.encode())
        source.seek(len(b"junk-prefix"))
    lp.config.hold_jobs = True

    async def upload() -> tuple[str, JobState]:
        async with client(lp) as c:
            job_id = await c.upload(source, "doc.md", correlation_id="doc-7")
            return job_id, (await c.status(job_id)).state

    job_id, state = asyncio.run(upload())
    assert state in (JobState.PENDING, JobState.RUNNING)
    assert lp.jobs[job_id].filename == "doc.md"
    assert lp.stats.records[0].headers["x-correlation-id"] == "doc-7"
    assert lp.stats.records[0].headers["idempotency-key"].startswith("upload-")
    lp.release(job_id)
    wait_job(lp, job_id)

    async def fetch() -> tuple[JobState, str, list[str]]:
        async with client(lp) as c:
            status = await c.status(job_id)
            markdown = await c.fetch_markdown(job_id)
            blocks = [block async for block in c.iter_markdown(job_id)]
            return status.state, markdown, blocks

    state, markdown, blocks = asyncio.run(fetch())
    assert state is JobState.COMPLETED
    assert markdown == DOC
    assert "".join(blocks) == DOC
    if kind == "stream":
        assert not source.closed  # the caller's stream is left open


def test_signed_webhook_is_delivered_and_verifies(lp: LlamaParseEmulator) -> None:
    async def main() -> list[tuple[bool, dict[str, Any]]]:
        received: list[tuple[bool, dict[str, Any]]] = []
        done = asyncio.Event()

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            ok = verify(body, request.headers.get(SIGNATURE_HEADER), SECRET)
            received.append((ok, json.loads(body)))
            done.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with client(lp) as c:
                job_id = await c.upload(
                    DOC.encode(),
                    "doc.md",
                    webhook_url=f"http://127.0.0.1:{port}/hook",
                    signing_secret=SECRET,
                )
            async with asyncio.timeout(10):  # safety net only
                await done.wait()
            assert received[0][1]["data"]["job_id"] == job_id
        finally:
            await runner.cleanup()
        return received

    received = asyncio.run(main())
    ok, event = received[0]
    assert ok
    assert event["event_type"] == "parse.success"
    assert is_fresh(event["timestamp"], now=event["timestamp"] + 1, max_age_s=300)
    hooks = next(iter(lp.jobs.values())).webhooks
    assert hooks[0].secret == SECRET
    assert hooks[0].events == frozenset({"parse.success", "parse.error"})


def test_webhook_without_secret_is_refused_before_any_request(lp: LlamaParseEmulator) -> None:
    async def main() -> None:
        async with client(lp) as c:
            await c.upload(b"x", "a.md", webhook_url="https://example.com/hook")

    with pytest.raises(ConfigError):
        asyncio.run(main())
    assert lp.stats.requests == 0


def test_upload_429_is_retried_after_retry_after(lp: LlamaParseEmulator) -> None:
    lp.inject(LlamaParseFault.RATE_LIMIT)

    async def main() -> str:
        async with client(lp) as c:
            return await c.upload(DOC.encode(), "doc.md")

    job_id = asyncio.run(main())
    records = list(lp.stats.records)
    assert [r.status for r in records] == [429, 200]
    assert records[1].time - records[0].time >= 0.99  # Retry-After: 1
    assert job_id in lp.jobs


def test_upload_window_is_respected_by_retrying(lp: LlamaParseEmulator) -> None:
    lp.config.upload_limit = 2
    lp.config.upload_window = 0.5

    async def main() -> list[str]:
        async with client(lp) as c:
            return list(await asyncio.gather(*(c.upload(b"doc", f"{i}.md") for i in range(4))))

    job_ids = asyncio.run(main())
    assert len(set(job_ids)) == 4
    assert lp.stats.uploads == 4


def test_out_of_credits_fails_at_once(lp: LlamaParseEmulator) -> None:
    lp.inject(LlamaParseFault.OUT_OF_CREDITS, times=3)

    async def main() -> None:
        async with client(lp) as c:
            await c.upload(DOC.encode(), "doc.md")

    with pytest.raises(QuotaExhausted):
        asyncio.run(main())
    assert lp.stats.requests == 1


def test_wrong_key_fails_at_once(lp: LlamaParseEmulator) -> None:
    async def main() -> None:
        async with client(lp, api_key="llx-wrong-0123456789abcdef") as c:
            await c.upload(DOC.encode(), "doc.md")

    with pytest.raises(AuthError) as info:
        asyncio.run(main())
    assert "llx-wrong" not in str(info.value)
    assert lp.stats.requests == 1


def test_failed_job(lp: LlamaParseEmulator) -> None:
    lp.inject(LlamaParseFault.JOB_FAILED)

    async def upload() -> str:
        async with client(lp) as c:
            return await c.upload(DOC.encode(), "doc.md")

    job_id = asyncio.run(upload())
    wait_job(lp, job_id)

    async def check() -> None:
        async with client(lp) as c:
            status = await c.wait(job_id, within=10.0)
            assert status.state is JobState.FAILED
            assert status.error_message
            with pytest.raises(InvalidInput, match="failed"):
                await c.fetch_markdown(job_id)

    asyncio.run(check())


def test_fetch_before_completion_is_transient(lp: LlamaParseEmulator) -> None:
    lp.config.hold_jobs = True

    async def main() -> None:
        async with client(lp) as c:
            job_id = await c.upload(DOC.encode(), "doc.md")
            with pytest.raises(TransientError, match="not finished"):
                await c.fetch_markdown(job_id)
            with pytest.raises(IngestError) as info:
                await c.wait(job_id, within=0.05, first_interval=0.01)
            assert info.value.error_class is ErrorClass.DEADLINE

    asyncio.run(main())


def test_unknown_job_is_invalid(lp: LlamaParseEmulator) -> None:
    async def main() -> None:
        async with client(lp) as c:
            await c.status("no-such-job")

    with pytest.raises(InvalidInput):
        asyncio.run(main())
    assert lp.stats.requests == 1


def test_unreachable_service_is_transient_then_opens_the_breaker(
    lp: LlamaParseEmulator,
) -> None:
    dead_url = lp.url  # a port nobody listens on once this emulator is stopped
    call(lp, lp.stop())

    async def main() -> None:
        breaker = CircuitBreaker("llamaparse", failure_threshold=3, reset_timeout=60)
        c = LlamaParseClient(
            DEFAULT_API_KEY,
            base_url=dead_url,
            backoff=FAST,
            breaker=breaker,
            max_attempts=2,
            timeout=5.0,
        )
        async with c:
            refused = f"parser API unreachable at {dead_url.rstrip('/')}: connection refused"
            with pytest.raises(TransientError, match=re.escape(refused)):
                await c.status("job")
            with pytest.raises(CircuitOpen, match=re.escape(refused)):
                await c.status("job")

    asyncio.run(main())


def test_non_seekable_stream_is_refused() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

    async def main() -> None:
        async with LlamaParseClient("llx-key", base_url="http://127.0.0.1:9") as c:
            await c.upload(Pipe(), "x.md")  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="seekable"):
        asyncio.run(main())
