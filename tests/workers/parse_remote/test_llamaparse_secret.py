"""The webhook signing secret: configured, or generated once per deployment under INGESTD_HOME."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from ingestd.shared.errors import ConfigError
from ingestd.shared.llamaparse.setup import (
    classify_job_failure,
    resolve_webhook_secret,
    webhook_url,
)
from ingestd.shared.telemetry.scrub import registered_secrets


def test_generated_once_private_and_stable(make_settings) -> None:
    settings = make_settings()
    path = settings.home / "webhook_secret"
    assert not path.exists()
    secret = resolve_webhook_secret(settings)
    assert len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_webhook_secret(make_settings()) == secret  # another process, same answer
    assert secret in registered_secrets()  # masked in every log line from now on
    assert [p.name for p in path.parent.iterdir() if "webhook_secret" in p.name] == [path.name]


def test_concurrent_first_use_agrees(make_settings) -> None:
    settings = make_settings()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_webhook_secret(settings)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_configured_secret_wins_and_bad_files_are_refused(make_settings) -> None:
    assert resolve_webhook_secret(make_settings(webhook_secret="configured-secret")) == (
        "configured-secret"
    )
    settings = make_settings()
    assert not (settings.home / "webhook_secret").exists()
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "webhook_secret"
    path.write_text("shared-with-everyone\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_webhook_secret(settings)
    os.chmod(path, 0o600)
    assert resolve_webhook_secret(settings) == "shared-with-everyone"
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        resolve_webhook_secret(settings)


def test_webhook_url_and_failure_classes(make_settings) -> None:
    assert webhook_url(make_settings()) is None
    assert (
        webhook_url(make_settings(public_url="https://ingest.example.org/"))
        == "https://ingest.example.org/v1/webhooks/llamaparse"
    )
    assert classify_job_failure("j", "Failed to parse the document: bad").error_class == (
        "invalid_input"
    )
    assert classify_job_failure("j", None).error_class == "invalid_input"
    assert classify_job_failure("j", "Request timed out, try again").error_class == "transient"
