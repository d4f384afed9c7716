"""One typed settings object for every ingestd process.

Sources, later wins: built-in defaults < TOML file (``--config`` or
``INGESTD_CONFIG``) < environment variables. The ecosystem's standard variable
names are used where they exist (``OPENAI_API_KEY``, ``SENTRY_DSN``, ``STATSD_*``…);
everything else is ``INGESTD_<KEY>``. A wrong value is reported naming the key,
where it came from, and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ingestd.shared.errors import ConfigError

# Keys read from a standard (non-INGESTD_) environment variable.
STANDARD_ENV: dict[str, str] = {
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "llama_cloud_api_key": "LLAMA_CLOUD_API_KEY",
    "llama_cloud_base_url": "LLAMA_CLOUD_BASE_URL",
    "sentry_dsn": "SENTRY_DSN",
    "sentry_environment": "SENTRY_ENVIRONMENT",
    "statsd_host": "STATSD_HOST",
    "statsd_port": "STATSD_PORT",
    "statsd_prefix": "STATSD_PREFIX",
}


def default_home() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ingestd"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # Where ingestd keeps its state: embedded database, secrets, profiles.
    home: Path = Field(default_factory=default_home)
    # Unset: an embedded PostgreSQL + pgvector under ``home``.
    database_url: str | None = None

    workers: int = Field(2, ge=1, le=256)
    embedder: Literal["auto", "openai", "local", "hash"] = "auto"
    embedding_model: str | None = None  # default depends on the embedder
    embedding_dimensions: int | None = Field(None, ge=1, le=16000)
    parser: Literal["local", "llamaparse"] = "local"

    http_host: str = "127.0.0.1"
    http_port: int = Field(8470, ge=0, le=65535)
    # The URL remote services use to reach our webhooks (LlamaParse callbacks).
    public_url: str | None = None
    max_upload_mb: int = Field(512, ge=1)

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_rpm: int | None = Field(None, ge=1)
    openai_tpm: int | None = Field(None, ge=1)
    openai_timeout_seconds: float = Field(60.0, gt=0)
    llama_cloud_api_key: SecretStr | None = None
    llama_cloud_base_url: str = "https://api.cloud.llamaindex.ai"
    webhook_secret: SecretStr | None = None  # generated under ``home`` when unset
    webhook_max_age_seconds: int = Field(300, ge=1)
    parse_callback_timeout_seconds: float = Field(600.0, gt=0)
    # USD per million tokens, by model; overrides the built-in table.
    prices_per_million: dict[str, float] = Field(default_factory=dict)

    sentry_dsn: str | None = None
    sentry_environment: str = "production"
    statsd_host: str | None = None
    statsd_port: int = Field(8125, ge=1, le=65535)
    statsd_prefix: str = "ingestd"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = None  # None: JSON unless stderr is a terminal
    log_file: Path | None = None

    chunk_target_tokens: int = Field(512, ge=16)
    chunk_overlap_tokens: int = Field(64, ge=0)
    # The API takes 2048; 512 keeps ~4 MB of base64 per response in memory instead of
    # ~16, and with two requests in flight the next response arrives while the last is
    # written: as fast or faster in the pipeline benchmark, 30-45% less worker memory.
    batch_max_inputs: int = Field(512, ge=1, le=2048)
    batch_max_tokens: int = Field(300_000, ge=1, le=300_000)
    embed_concurrency: int = Field(2, ge=1, le=64)  # requests in flight per worker

    # Vectors needed before the HNSW index is built (then it is kept up incrementally).
    index_min_rows: int = Field(20_000, ge=1)

    # A claim takes up to ``claim_batch`` documents while their summed size stays
    # within ``claim_max_bytes`` (the first is always taken); small fresh documents
    # claimed together run through the stages as one group (workers/group.py).
    claim_batch: int = Field(64, ge=1, le=1000)
    claim_max_bytes: int = Field(1 << 20, ge=0)
    lease_seconds: float = Field(60.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(600.0, gt=0)
    poll_seconds: float = Field(5.0, gt=0)  # fallback poll when a NOTIFY is lost
    stage_deadline_seconds: float = Field(1800.0, gt=0)

    heartbeat_timeout_seconds: float = Field(30.0, gt=0)
    drain_timeout_seconds: float = Field(60.0, gt=0)
    # A worker with the local model (torch + MiniLM) settles at ~760-800 MB USS; one
    # with the OpenAI embedder at ~90-170 MB.
    memory_soft_mb: int = Field(1024, ge=16)
    memory_hard_mb: int = Field(1536, ge=16)
    memory_strikes: int = Field(3, ge=1)
    memory_check_seconds: float = Field(1.0, gt=0)
    recycle_after_documents: int | None = Field(None, ge=1)
    recycle_after_seconds: float | None = Field(None, gt=0)
    recycle_jitter: float = Field(0.1, ge=0, le=1)
    restart_backoff_base_seconds: float = Field(0.5, gt=0)
    restart_backoff_max_seconds: float = Field(30.0, gt=0)
    crash_loop_limit: int = Field(10, ge=1)  # rapid failures before the supervisor gives up
    crash_loop_window_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_target_tokens:
            raise ValueError("chunk_overlap_tokens must be smaller than chunk_target_tokens")
        if self.memory_soft_mb > self.memory_hard_mb:
            raise ValueError("memory_soft_mb must not exceed memory_hard_mb")
        return self

    def env_name(self, key: str) -> str:
        return env_name(key)


_SECRET_KEYS = frozenset({"openai_api_key", "llama_cloud_api_key", "webhook_secret", "sentry_dsn"})


def env_name(key: str) -> str:
    return STANDARD_ENV.get(key, "INGESTD_" + key.upper())


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in Settings.model_fields:
        raw = environ.get(env_name(key))
        if raw is None or raw == "":
            continue
        if key == "prices_per_million":
            raise ConfigError(f"{env_name(key)}: set prices in the TOML file, not the environment")
        values[key] = raw
    return values


def _origin(key: str, env_values: Mapping[str, Any], config_path: Path | None) -> str:
    if key in env_values:
        return f"environment variable {env_name(key)}"
    if config_path is not None:
        return f"{config_path}: key '{key}'"
    return f"setting '{key}'"


def load_settings(
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build and validate the settings; raise ConfigError with a readable message."""
    environ = os.environ if environ is None else environ
    path_value = config_path or environ.get("INGESTD_CONFIG")
    path = Path(path_value) if path_value else None
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                file_values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        # Allow an [ingestd] table or top-level keys.
        file_values = dict(file_values.get("ingestd", file_values))
        unknown = sorted(set(file_values) - set(Settings.model_fields))
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(Settings.model_fields))}"
            )
    env_values = _from_env(environ)
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else ""
            where = _origin(key, env_values, path) if key else "settings"
            detail = err["msg"]
            if err["type"] == "literal_error":
                detail = f"must be one of {err['ctx']['expected']}"
            shown = "" if key in _SECRET_KEYS else f" (got {err.get('input')!r})"
            lines.append(f"{where}: {detail}{shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
