"""``ingestd doctor`` as an operator runs it: a real subprocess against the test database,
the OpenAI and LlamaParse emulators, a statsd socket and a Sentry endpoint on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingestd.shared.db.migrate import latest_version
from tests.emulators.llamaparse_api import DEFAULT_API_KEY as LLAMA_KEY
from tests.emulators.llamaparse_api import LlamaParseEmulator, LlamaParseEmulatorConfig
from tests.emulators.openai_api import DEFAULT_API_KEY as OPENAI_KEY
from tests.emulators.runner import running
from tests.shared.telemetry.statsd_sink import recv, statsd_server  # noqa: F401  (fixture)

CHECKS = [
    "database",
    "postgresql",
    "pgvector",
    "migrations",
    "embedder",
    "parser",
    "webhooks",
    "statsd",
    "sentry",
    "home disk",
    "db disk",
    "systemd unit",
]


@pytest.fixture
def llamaparse_emulator() -> Iterator[LlamaParseEmulator]:
    with running(LlamaParseEmulator(LlamaParseEmulatorConfig())) as api:
        yield api


class _SentryHandler(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_endpoint() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (_SentryHandler,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/42", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def unit_file(tmp_path: Path) -> Path:
    env_file = tmp_path / "ingestd.env"
    env_file.write_text("")
    unit = tmp_path / "ingestd.service"
    unit.write_text(
        f"[Service]\nExecStart={sys.executable} -m ingestd run\nEnvironmentFile=-{env_file}\n"
    )
    return unit


@pytest.fixture
def healthy_env(
    cli_env: dict[str, str],
    openai_emulator: Any,
    llamaparse_emulator: LlamaParseEmulator,
    statsd_server: socket.socket,  # noqa: F811
    sentry_endpoint: tuple[str, list[Any]],
) -> dict[str, str]:
    env = dict(cli_env)
    env.update(
        INGESTD_EMBEDDER="openai",
        OPENAI_API_KEY=OPENAI_KEY,
        OPENAI_BASE_URL=openai_emulator.base_url,
        INGESTD_EMBEDDING_DIMENSIONS="256",
        INGESTD_PARSER="llamaparse",
        LLAMA_CLOUD_API_KEY=LLAMA_KEY,
        LLAMA_CLOUD_BASE_URL=llamaparse_emulator.url,
        INGESTD_PUBLIC_URL="https://ingestd.example.com",
        STATSD_HOST="127.0.0.1",
        STATSD_PORT=str(statsd_server.getsockname()[1]),
        SENTRY_DSN=sentry_endpoint[0],
    )
    return env


def doctor(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "doctor", "--min-free-mb", "1", *args],
        env={**env, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def doctor_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    done = doctor(env, "--json", *args)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_everything_reachable_is_all_ok(
    healthy_env: dict[str, str],
    unit_file: Path,
    openai_emulator: Any,
    statsd_server: socket.socket,  # noqa: F811
    sentry_endpoint: tuple[str, list[Any]],
) -> None:
    code, report = doctor_json(healthy_env, "--unit", str(unit_file), "--send-test-event")
    checks = by_name(report)
    assert {n: c["status"] for n, c in checks.items()} == dict.fromkeys(CHECKS, "ok"), report
    assert code == 0 and report["ok"] is True and report["exit_code"] == 0
    # The embedder check made a real request and read the vector back.
    assert openai_emulator.stats.count(200) == 1
    assert checks["embedder"]["details"]["dimensions"] == 256
    assert checks["embedder"]["details"]["http_status"] == 200
    assert checks["parser"]["details"]["http_status"] == 404  # authenticated: unknown job
    assert recv(statsd_server) == "ingestd.doctor.probe:1|c"
    path, headers, body = sentry_endpoint[1][0]
    assert path == "/api/42/envelope/"
    assert "sentry_key=publickey" in headers["X-Sentry-Auth"]
    event = json.loads(body.splitlines()[2])
    assert event["event_id"] == checks["sentry"]["details"]["event_id"]
    assert checks["migrations"]["details"] == {
        "current": latest_version(),
        "latest": latest_version(),
    }


def test_the_table_fits_80_columns_and_names_each_check(
    healthy_env: dict[str, str], unit_file: Path, sentry_endpoint: tuple[str, list[Any]]
) -> None:
    done = doctor(healthy_env, "--unit", str(unit_file))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in CHECKS:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert lines[-1] == "12 checks: 12 ok"
    assert "--send-test-event sends one" in " ".join(done.stdout.split())  # may wrap
    assert sentry_endpoint[1] == []  # without --send-test-event nothing is sent


def test_embedder_on_a_closed_port_fails_and_exits_1(healthy_env: dict[str, str]) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**healthy_env, "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1"}
    code, report = doctor_json(env)
    embedder = by_name(report)["embedder"]
    assert code == 1 and report["ok"] is False
    assert embedder["status"] == "fail"
    assert "cannot reach" in embedder["finding"] and "refused" in embedder["finding"].lower()
    assert embedder["fix"] and "OPENAI_BASE_URL" in embedder["fix"]


def test_a_wrong_api_key_fails_without_printing_it(healthy_env: dict[str, str]) -> None:
    wrong = "sk-wrong-key-0123456789"
    done = doctor({**healthy_env, "OPENAI_API_KEY": wrong}, "--json")
    report = json.loads(done.stdout)
    embedder = by_name(report)["embedder"]
    assert done.returncode == 1
    assert embedder["status"] == "fail" and embedder["details"]["http_status"] == 401
    assert "refused the API key" in embedder["finding"]
    assert wrong not in done.stdout + done.stderr
    table = doctor({**healthy_env, "OPENAI_API_KEY": wrong})
    assert wrong not in table.stdout + table.stderr


def test_a_wrong_llamaparse_key_fails(healthy_env: dict[str, str]) -> None:
    code, report = doctor_json({**healthy_env, "LLAMA_CLOUD_API_KEY": "llx-wrong"})
    parser = by_name(report)["parser"]
    assert code == 1 and parser["status"] == "fail" and parser["details"]["http_status"] == 401


def test_migrations_behind_fail(healthy_env: dict[str, str], fresh_db_url: Any) -> None:
    url = fresh_db_url(migrated=True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (latest_version(),))
    code, report = doctor_json({**healthy_env, "INGESTD_DATABASE_URL": url})
    migrations = by_name(report)["migrations"]
    assert code == 1
    assert migrations["status"] == "fail"
    assert migrations["details"] == {"current": latest_version() - 1, "latest": latest_version()}
    assert "ingestd db migrate" in migrations["fix"]


def test_statsd_host_that_does_not_resolve_fails(healthy_env: dict[str, str]) -> None:
    # .invalid never resolves (RFC 2606).
    code, report = doctor_json({**healthy_env, "STATSD_HOST": "statsd.doctor.invalid"})
    statsd = by_name(report)["statsd"]
    assert code == 1 and statsd["status"] == "fail"
    assert "does not resolve" in statsd["finding"] and statsd["details"]["address"] is None


def test_an_unreachable_database_fails_and_skips_what_needs_it(
    healthy_env: dict[str, str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://ingestd:s3cret-pw@127.0.0.1:{port}/ingestd"
    done = doctor({**healthy_env, "INGESTD_DATABASE_URL": url}, "--json")
    report = json.loads(done.stdout)
    checks = by_name(report)
    assert done.returncode == 1
    assert checks["database"]["status"] == "fail"
    assert "postgresql://ingestd:***@127.0.0.1" in checks["database"]["finding"]
    assert "s3cret-pw" not in done.stdout + done.stderr
    for name in ("postgresql", "pgvector", "migrations", "db disk"):
        assert checks[name]["status"] == "skip", name


def test_a_hung_embedder_is_cut_off_at_the_timeout(
    healthy_env: dict[str, str], openai_emulator: Any
) -> None:
    openai_emulator.config.latency = 30.0  # far beyond the timeout: the service hangs
    code, report = doctor_json(healthy_env, "--timeout", "1")
    embedder = by_name(report)["embedder"]
    assert code == 1 and embedder["status"] == "fail"
    # Either our request's own timeout or the check's deadline caught it.
    assert "timed out" in embedder["finding"] or "no answer within 1 s" in embedder["finding"]


def test_json_shape_has_stable_types(healthy_env: dict[str, str], unit_file: Path) -> None:
    code, report = doctor_json(healthy_env, "--unit", str(unit_file))
    assert set(report) == {"ok", "exit_code", "summary", "checks"}
    assert isinstance(report["ok"], bool) and isinstance(report["exit_code"], int)
    assert set(report["summary"]) == {"ok", "warn", "fail", "skip"}
    assert sum(report["summary"].values()) == len(CHECKS)
    assert [c["name"] for c in report["checks"]] == CHECKS
    for check in report["checks"]:
        assert set(check) == {"name", "status", "finding", "fix", "seconds", "details"}
        assert check["status"] in {"ok", "warn", "fail", "skip"}
        assert isinstance(check["finding"], str) and "\n" not in check["finding"]
        assert (check["fix"] is None) == (check["status"] in {"ok", "skip"})
        assert isinstance(check["seconds"], float | int) and check["seconds"] >= 0
        assert isinstance(check["details"], dict)
    assert code == 0


def test_a_bad_setting_is_a_usage_error_without_traceback(cli_env: dict[str, str]) -> None:
    done = doctor({**cli_env, "INGESTD_WORKERS": "many"})
    assert done.returncode == 2
    assert "INGESTD_WORKERS" in done.stderr and "Traceback" not in done.stderr
    done = doctor(cli_env, "--timeout", "0")
    assert done.returncode == 2 and "is not more than 0" in done.stderr


def test_an_empty_database_says_to_migrate(healthy_env: dict[str, str], fresh_db_url: Any) -> None:
    code, report = doctor_json({**healthy_env, "INGESTD_DATABASE_URL": fresh_db_url()})
    checks = by_name(report)
    assert code == 1
    assert checks["migrations"]["status"] == "fail"
    assert checks["migrations"]["finding"] == "the schema is not created yet"
    # pgvector is on the server (pgserver ships it) but not created in a new database.
    assert checks["pgvector"]["status"] == "warn"
    assert checks["pgvector"]["details"]["installed"] is None
    assert checks["pgvector"]["details"]["available"]
