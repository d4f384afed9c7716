"""HTTP API under upload load: uploads per second, and /healthz latency meanwhile.

    python -m profiling.bench_http [--clients 20] [--size-mb 1] [--seconds 20]

The real server (``supervisor.http.app.serve``, as the daemon's HTTP child runs it) in a
child process, on a scratch embedded PostgreSQL (``--database-url`` for another server);
``--clients`` aiohttp clients upload distinct random files of ``--size-mb`` back to back
while one more client asks ``/healthz`` every 50 ms. Prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from ingestd.shared.settings import load_settings
from profiling.scratch import scratch_database

PROBE_INTERVAL = 0.05


def _serve(env: dict[str, str], url: str) -> None:
    from ingestd.supervisor.http.app import serve

    asyncio.run(serve(load_settings(environ=env), url=url))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _uploader(
    session: aiohttp.ClientSession, base: str, size: int, until: float, token: str
) -> list[float]:
    took = []
    while time.perf_counter() < until:
        form = aiohttp.FormData()
        text = os.urandom(size // 2).hex().encode()  # distinct text: every upload is new
        form.add_field("file", text, filename="bench.txt", content_type="text/plain")
        started = time.perf_counter()
        auth = {"Authorization": f"Bearer {token}"}
        async with session.post(base + "/v1/documents", data=form, headers=auth) as resp:
            await resp.read()
            if resp.status not in (200, 201, 422):
                raise RuntimeError(f"upload answered {resp.status}")
        took.append(time.perf_counter() - started)
    return took


async def _prober(session: aiohttp.ClientSession, base: str, until: float) -> list[float]:
    took = []
    while time.perf_counter() < until:
        started = time.perf_counter()
        async with session.get(base + "/healthz") as resp:
            await resp.read()
            assert resp.status == 200
        took.append(time.perf_counter() - started)
        await asyncio.sleep(PROBE_INTERVAL)
    return took


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the server did not come up")


async def _load(base: str, clients: int, size: int, seconds: float, token: str) -> dict[str, Any]:
    await _wait_ready(base)
    until = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients + 1)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        probe = asyncio.create_task(_prober(session, base, until))
        uploads = await asyncio.gather(
            *(_uploader(session, base, size, until, token) for _ in range(clients))
        )
        elapsed = time.perf_counter() - started
        health = await probe
    done = [t for per in uploads for t in per]
    health_ms = sorted(t * 1000 for t in health)
    return {
        "uploads": len(done),
        "uploads_per_second": len(done) / elapsed,
        "upload_p50_ms": statistics.median(done) * 1000,
        "healthz_n": len(health_ms),
        "healthz_p50_ms": statistics.median(health_ms),
        "healthz_p99_ms": health_ms[min(len(health_ms) - 1, int(0.99 * len(health_ms)))],
        "healthz_max_ms": health_ms[-1],
    }


def _write_token(url: str) -> str:
    """A token the uploaders authenticate with, as an application would."""
    from ingestd.shared.db.connect import connect
    from ingestd.supervisor.tokens import Scope, issue

    with connect(url, autocommit=True) as conn:
        return issue(conn, "bench-http", Scope.WRITE).token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--size-mb", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    port = _free_port()
    with (
        scratch_database(args.database_url, "bench-http") as url,
        tempfile.TemporaryDirectory() as home,
    ):
        token = _write_token(url)
        env = {
            # Uploads are what is measured, not the per-token request limit.
            "INGESTD_API_RATE_PER_SECOND": "10000",
            "INGESTD_API_RATE_BURST": "10000",
            "INGESTD_HOME": home,
            "INGESTD_DATABASE_URL": url,
            "INGESTD_HTTP_PORT": str(port),
            "INGESTD_EMBEDDER": "hash",
            "INGESTD_MAX_UPLOAD_MB": str(max(1, int(args.size_mb) + 1)),
        }
        server = mp.get_context("spawn").Process(target=_serve, args=(env, url))
        server.start()
        try:
            figures = asyncio.run(
                _load(
                    f"http://127.0.0.1:{port}",
                    args.clients,
                    int(args.size_mb * 2**20),
                    args.seconds,
                    token,
                )
            )
        finally:
            os.kill(server.pid, signal.SIGTERM)  # type: ignore[arg-type]
            server.join(30)
    print(
        f"{args.clients} clients uploading {args.size_mb:g} MB files for {args.seconds:g} s:"
        f" {figures['uploads']} uploads, {figures['uploads_per_second']:.1f} uploads/s"
        f" (median {figures['upload_p50_ms']:.0f} ms each);"
        f" /healthz meanwhile ({figures['healthz_n']} probes):"
        f" p50 {figures['healthz_p50_ms']:.1f} ms,"
        f" p99 {figures['healthz_p99_ms']:.1f} ms, max {figures['healthz_max_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
