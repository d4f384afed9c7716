"""Fixtures for the end-to-end observability tests: a real ``ingestd run`` against the
test database, and real sockets standing in for statsd and Sentry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.supervisor.observability.obs_support import (
    FAST_ENV,
    Daemon,
    SentryIngest,
    StatsdSink,
    spawn,
)


@pytest.fixture
def daemon_env(cli_env: dict[str, str]) -> dict[str, str]:
    """``cli_env`` with small timeouts and JSON logs; no proxy between us and our sockets."""
    env = {**cli_env, **FAST_ENV}
    for var in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "SENTRY_DSN",
        "STATSD_HOST",
        "STATSD_PORT",
        "STATSD_PREFIX",
    ):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.fixture
def start_daemon(tmp_path: Path, conn: psycopg.Connection[Any]) -> Iterator[Callable[..., Daemon]]:
    """Start ``ingestd <args>`` (default ``run --drain``) with ``env``; killed at teardown."""
    daemons: list[Daemon] = []

    def start(env: dict[str, str], *args: str) -> Daemon:
        log_path = tmp_path / f"ingestd-{len(daemons)}.log"
        daemon = spawn(args or ("run", "--drain"), env, log_path)
        daemons.append(daemon)
        return daemon

    yield start
    for daemon in daemons:
        daemon.kill()


@pytest.fixture
def statsd_sink() -> Iterator[StatsdSink]:
    sink = StatsdSink()
    yield sink
    sink.close()


@pytest.fixture
def sentry_ingest() -> Iterator[SentryIngest]:
    server = SentryIngest()
    yield server
    server.close()
