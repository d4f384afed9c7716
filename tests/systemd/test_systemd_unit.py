"""The systemd unit passes `systemd-analyze verify` silently and scores <= 3.0 exposure."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "systemd" / "check-unit.sh"
UNIT = ROOT / "systemd" / "ingestd.service"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (package systemd); the unit check cannot run",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CHECK), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_ingestd_unit_passes() -> None:
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify printed nothing" in result.stdout
    score = float(result.stdout.split("exposure ")[1].split()[0])
    assert score <= 3.0


def test_the_check_fails_on_a_verify_warning(tmp_path: Path) -> None:
    unit = tmp_path / "ingestd.service"
    unit.write_text(UNIT.read_text().replace("[Service]\n", "[Service]\nWatchDogSec=30\n", 1))
    result = run(str(unit))
    assert result.returncode == 1
    assert "Unknown key 'WatchDogSec'" in result.stderr


def test_the_check_fails_on_a_weakly_hardened_unit(tmp_path: Path) -> None:
    unit = tmp_path / "bare.service"
    unit.write_text("[Service]\nType=notify\nExecStart=/usr/bin/true\n")
    result = run(str(unit))
    assert result.returncode == 1
    assert "verify printed nothing" in result.stdout
    assert "FAIL: exposure 9.6 > 3.0" in result.stderr


def test_unit_has_the_required_settings() -> None:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/ingestd/.venv/bin/ingestd run",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "KillMode": "mixed",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "90",
        "OOMPolicy": "continue",
        "Restart": "on-failure",
        "User": "ingestd",
        "StateDirectory": "ingestd",
        "EnvironmentFile": "-/etc/ingestd/ingestd.env",
        "UMask": "0077",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    assert "INGESTD_HOME=/var/lib/ingestd" in settings["Environment"]
    assert "MemoryDenyWriteExecute" not in settings  # needs W+X for JIT; see the unit's comment


def test_env_example_documents_every_variable() -> None:
    text = (ROOT / "systemd" / "ingestd.env.example").read_text()
    for var in (
        "OPENAI_API_KEY", "OPENAI_BASE_URL", "SENTRY_DSN", "SENTRY_ENVIRONMENT", "STATSD_HOST",
        "STATSD_PORT", "STATSD_PREFIX", "INGESTD_HOME", "INGESTD_DATABASE_URL",
        "INGESTD_WORKERS", "INGESTD_EMBEDDER", "INGESTD_PARSER", "INGESTD_HTTP_HOST",
        "INGESTD_HTTP_PORT", "LLAMA_CLOUD_API_KEY",
    ):  # fmt: skip
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if line.lstrip("#").startswith(var + "="))
        assert lines[index - 1].startswith("# "), f"{var} has no comment above it"
