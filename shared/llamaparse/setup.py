"""LlamaParse set-up that the worker and the HTTP child share: the client, the webhook's
address and signing secret, and what a failed job means for the document."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from typing import Any

from ingestd.shared.errors import (
    AuthError,
    ConfigError,
    IngestError,
    InvalidInput,
    TransientError,
)
from ingestd.shared.llamaparse.client import LlamaParseClient
from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.api_metrics import attempt_metrics
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.shared.telemetry.scrub import register_secret

SERVICE = "llamaparse"
WEBHOOK_PATH = "/v1/webhooks/llamaparse"
SECRET_FILE = "webhook_secret"
MIN_SECRET_CHARS = 16


def webhook_url(settings: Settings) -> str | None:
    if not settings.public_url:
        return None
    return settings.public_url.rstrip("/") + WEBHOOK_PATH


def resolve_webhook_secret(settings: Settings) -> str:
    """The webhook signing secret: ``webhook_secret`` when configured, else a secret
    generated once per deployment and kept in ``INGESTD_HOME/webhook_secret`` (mode 0600),
    so every worker and the HTTP child of every restart agree on it."""
    if settings.webhook_secret is not None:
        value = settings.webhook_secret.get_secret_value()
        if len(value.strip()) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"webhook_secret (INGESTD_WEBHOOK_SECRET) must be at least {MIN_SECRET_CHARS}"
                " characters: it is the key that proves a webhook came from LlamaParse"
            )
        register_secret(value)
        return value
    path = settings.home / SECRET_FILE
    value = _read_secret_file(path)
    if value is None:
        value = _create_secret_file(path)
    register_secret(value)
    return value


def _read_secret_file(path: os.PathLike[str]) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the webhook secret file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "r", encoding="utf-8") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"the webhook secret file {path} is readable by others "
                f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
            )
        value = fh.read().strip()
    if not value:
        raise ConfigError(f"the webhook secret file {path} is empty; delete it to regenerate")
    return value


def _create_secret_file(path: Any) -> str:
    """Write a new secret without ever exposing a partial file: a private temporary file,
    then ``link`` (atomic, refuses to overwrite). Whoever links first wins; the others
    read the winner's secret."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_secret_file(path)
            if existing is None:
                raise ConfigError(f"the webhook secret file {path} vanished while read") from None
            return existing
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return value


def make_client(settings: Settings, metrics: Metrics) -> LlamaParseClient:
    if settings.llama_cloud_api_key is None:
        raise AuthError(
            "parser=llamaparse needs a LlamaCloud API key (LLAMA_CLOUD_API_KEY); none is set"
        )
    key = settings.llama_cloud_api_key.get_secret_value()
    register_secret(key)
    return LlamaParseClient(
        key, settings.llama_cloud_base_url, on_event=attempt_metrics(metrics, SERVICE)
    )


_TRANSIENT_REASON = re.compile(
    r"(?i)\b(time(?:d)?\s*out|timeout|temporar\w*|try again|internal (?:server )?error|"
    r"unavailable|overload\w*|rate limit\w*|too many requests)\b"
)


def classify_job_failure(job_id: str, message: str | None) -> IngestError:
    """A FAILED job: the document's fault unless the reason says the service's."""
    reason = f": {message}" if message else ""
    if message and _TRANSIENT_REASON.search(message):
        return TransientError(f"llamaparse: job {job_id} failed{reason}")
    return InvalidInput(f"llamaparse: job {job_id} failed{reason}")
