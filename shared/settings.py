"""One typed settings object for every ingestd process.

Sources, later wins: built-in defaults < TOML file (``--config`` or
``INGESTD_CONFIG``) < environment variables < keyword options (the command line,
tests). The ecosystem's standard variable names are used where they exist
(``OPENAI_API_KEY``, ``SENTRY_DSN``, ``STATSD_*``…); everything else is
``INGESTD_<KEY>``. A wrong value is reported naming the key, where it came from,
and what is allowed.

pydantic-settings reads and merges the sources; this module adds what it does not
do: the environment is the mapping given to ``load_settings`` (never ``os.environ``
behind its back), a missing or unreadable TOML file is fatal, and a validation
error becomes one readable ``ConfigError``.
"""

from __future__ import annotations

import difflib
import os
import pwd
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ingestd.shared.errors import ConfigError


@dataclass
class _Load:
    """What one ``load_settings`` call reads from, seen by ``settings_customise_sources``."""

    environ: Mapping[str, str]
    config_path: Path | None
    # Filled by the TOML source, so that an error can say a value came from the file.
    file_keys: frozenset[str] = field(default_factory=frozenset)


# pydantic-settings builds its sources in a classmethod with no per-call arguments; the
# call's environment and file reach it through this variable (per thread and task).
_LOAD: ContextVar[_Load | None] = ContextVar("ingestd_settings_load", default=None)


def _current_load() -> _Load:
    load = _LOAD.get()
    if load is not None:
        return load
    # ``Settings()`` built directly reads the process environment, as BaseSettings does.
    return _Load(os.environ, _config_path(None, os.environ))


def _config_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    value = explicit or environ.get("INGESTD_CONFIG")
    return Path(value) if value else None


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/ingestd``, else ``~/.local/state/ingestd``, from ``environ``."""
    environ = _current_load().environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME")
    if not state:
        # Path.home() would read os.environ["HOME"]; the account's entry is the answer
        # when the given environment has no HOME, as it is for Path.home() itself.
        home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        state = str(Path(home) / ".local" / "state")
    return Path(state) / "ingestd"


def _env_alias(key: str) -> str:
    return "INGESTD_" + key.upper()


class _MappingEnvSource(EnvSettingsSource):
    """The library's environment source over the mapping given to ``load_settings``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        for key in FILE_ONLY_KEYS:
            name = env_name(key)
            if environ.get(name):
                raise ConfigError(f"{name}: set {key} in the TOML file, not the environment")
        _refuse_unknown_variables(environ)
        if not environ.get("INGESTD_DATABASE_URL") and environ.get("DATABASE_URL"):
            # The conventional name, when ours is not set: platforms that provision a
            # database (Heroku-style, docker-compose files) export DATABASE_URL.
            environ = {**environ, "INGESTD_DATABASE_URL": environ["DATABASE_URL"]}
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names are matched exactly (case_sensitive), and an empty value counts as unset,
        # as the library's env_ignore_empty does for os.environ.
        return {k: v for k, v in self._environ.items() if not (self.env_ignore_empty and v == "")}


# INGESTD_* variables that are not settings: the file to read, the metric catalogue's
# strict mode (tests), and the test suite's own (INGESTD_TEST_*).
_OTHER_VARIABLES = frozenset({"INGESTD_CONFIG", "INGESTD_METRICS_STRICT"})


def _refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    """A misspelt INGESTD_* variable is an error, as a misspelt key in the file is:
    ``INGESTD_WORKER=4`` silently running with the default is a fallback nobody chose."""
    known = {env_name(key) for key in Settings.model_fields} | _OTHER_VARIABLES
    for name in sorted(environ):
        if (
            name.startswith("INGESTD_")
            and name not in known
            and not name.startswith("INGESTD_TEST_")
        ):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown environment variable {name}{hint}")


class _TomlFileSource(TomlConfigSettingsSource):
    """The library's TOML source, but a missing or broken file stops start-up, keys may
    sit under an ``[ingestd]`` table, and only key names (not variable names) are known."""

    def __init__(self, settings_cls: type[BaseSettings], load: _Load) -> None:
        self._load = load
        path = load.config_path
        # The library skips a file that does not exist; a named one that is missing is
        # a mistake the operator must hear about.
        if path is not None and not path.is_file():
            what = "is not a file" if path.exists() else "not found"
            raise ConfigError(f"config file {what}: {path}")
        super().__init__(settings_cls, toml_file=path)

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        try:
            with file_path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {file_path} cannot be read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not valid TOML: {exc}") from None
        table = data.get("ingestd")
        if isinstance(table, dict) and len(data) > 1:
            beside = ", ".join(sorted(k for k in data if k != "ingestd"))
            raise ConfigError(
                f"{file_path}: {beside} beside the [ingestd] table would be ignored; "
                "put every key under [ingestd], or none"
            )
        values: dict[str, Any] = dict(table) if isinstance(table, dict) else data
        # Checked here, not left to extra="forbid": the aliases would let a variable name
        # such as OPENAI_API_KEY pass as a key.
        known = Settings.model_fields
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{file_path}: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        self._load.file_keys = frozenset(values)
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        # Each field is read from its variable name (the alias), and set by its key name
        # in the file and options.
        alias_generator=_env_alias,
        populate_by_name=True,
        case_sensitive=True,
        env_ignore_empty=True,
    )

    # Each field's description is the operator's documentation of the setting: the env
    # example and the README table are generated from it (shared/settings_docs.py).
    home: Path = Field(
        default_factory=lambda: default_home(),
        description="State directory: embedded PostgreSQL data, generated webhook secret, "
        "profiles.",
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL connection URL, e.g. "
        "postgresql://ingestd@db.internal:5432/ingestd; any PostgreSQL 15 or later with "
        "the pgvector extension. DATABASE_URL is read when this is not set. Unset: an "
        "embedded PostgreSQL + pgvector (pgserver) under the home directory, run as a "
        "child process.",
    )

    workers: int = Field(2, ge=1, le=256, description="Number of worker processes.")
    embedder: Literal["auto", "openai", "local", "hash"] = Field(
        "auto",
        description="auto: openai when OPENAI_API_KEY is set, else local. openai: the OpenAI "
        "API (or a compatible server). local: sentence-transformers on CPU (needs the "
        "`local` extra). hash: deterministic vectors, for tests.",
    )
    embedding_model: str | None = Field(
        None,
        description="Embedding model, e.g. text-embedding-3-small. Unset: the embedder's "
        "default (text-embedding-3-small for openai).",
    )
    embedding_dimensions: int | None = Field(
        None,
        ge=1,
        le=16000,
        description="Vector dimensions (text-embedding-3-* can shorten theirs). Unset: the "
        "model's native size.",
    )
    parser: Literal["local", "llamaparse"] = Field(
        "local",
        description="local: plain text and Markdown (any common encoding), HTML, PDF, DOCX "
        "and PPTX, in-process. llamaparse: LlamaParse (needs LLAMA_CLOUD_API_KEY).",
    )

    http_host: str = Field(
        "127.0.0.1",
        description="Address the HTTP API (uploads, status, health, parse callbacks) listens "
        "on. Keep it on loopback behind a reverse proxy unless the network is trusted.",
    )
    http_port: int = Field(8470, ge=0, le=65535, description="TCP port of the HTTP API.")
    public_url: str | None = Field(
        None,
        description="The URL remote services use to reach our webhooks (LlamaParse "
        "callbacks), e.g. https://ingestd.example.com. Unset: no callbacks; ingestd polls "
        "LlamaParse for results.",
    )
    max_upload_mb: int = Field(
        512, ge=1, description="Largest document the HTTP API accepts, in MiB."
    )
    webhook_host: str | None = Field(
        None,
        description="Address of a second listener that serves only the signed LlamaParse "
        "webhook (POST /v1/webhooks/llamaparse), so it can be published without the API. "
        "Unset: http_host, when webhook_port is set.",
    )
    webhook_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="TCP port of the webhook-only listener. Unset: no such listener (the "
        "webhook is served on the API listener).",
    )
    api_rate_per_second: float = Field(
        20.0,
        gt=0,
        description="Requests per second each API token may make, on average (a token "
        "bucket per token and HTTP process); beyond it: 429 with Retry-After.",
    )
    api_rate_burst: int = Field(
        60,
        ge=1,
        description="Requests a token may make at once before api_rate_per_second applies.",
    )
    http_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A connection must send a request's complete headers within this long "
        "(from connecting, or from its first byte after the last answer), else it is "
        "closed. Idle keep-alive connections are closed after it too.",
    )
    http_body_floor_seconds: float = Field(
        10.0,
        gt=0,
        description="Grace before a request body's minimum rate applies: a body of N KiB "
        "must arrive within http_body_floor_seconds + N / http_body_min_rate_kib seconds, "
        "else 408 and the connection is closed. Time the server itself is not reading "
        "(waiting for an upload slot) is not counted.",
    )
    http_body_min_rate_kib: float = Field(
        16.0, gt=0, description="Slowest rate a request body may arrive at, in KiB/s."
    )
    http_max_connections_per_ip: int = Field(
        64,
        ge=1,
        description="Open connections one client address may hold; more are closed at once. "
        "Behind a reverse proxy every client has the proxy's address: raise it.",
    )
    http_max_connections: int = Field(
        512,
        ge=1,
        description="Open connections of all clients together, kept under the open-file "
        "limit; more are closed at once.",
    )

    openai_api_key: SecretStr | None = Field(
        None,
        alias="OPENAI_API_KEY",
        description="API key for the OpenAI embedder; required when the embedder is openai.",
    )
    openai_base_url: str | None = Field(
        None,
        alias="OPENAI_BASE_URL",
        description="Base URL of an OpenAI-compatible API: a proxy, a gateway or the local "
        "emulator. Unset: the official endpoint.",
    )
    openai_rpm: int | None = Field(
        None,
        ge=1,
        description="The account's requests-per-minute limit, shared by the workers. Unset: "
        "learnt from the API's rate-limit headers.",
    )
    openai_tpm: int | None = Field(
        None,
        ge=1,
        description="The account's tokens-per-minute limit, shared by the workers. Unset: "
        "learnt from the API's rate-limit headers.",
    )
    openai_timeout_seconds: float = Field(
        60.0, gt=0, description="Timeout of one embedding request."
    )
    llama_cloud_api_key: SecretStr | None = Field(
        None,
        alias="LLAMA_CLOUD_API_KEY",
        description="API key for the LlamaParse parser; required when the parser is llamaparse.",
    )
    llama_cloud_base_url: str = Field(
        "https://api.cloud.llamaindex.ai",
        alias="LLAMA_CLOUD_BASE_URL",
        description="LlamaCloud API base URL.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Secret that signs and verifies webhook callbacks. Unset: generated "
        "once and kept under the home directory.",
    )
    webhook_max_age_seconds: int = Field(
        300, ge=1, description="Oldest signed webhook callback accepted (replay protection)."
    )
    parse_callback_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a remote parse waits for its LlamaParse callback.",
    )
    prices_per_million: dict[str, float] = Field(
        default_factory=dict,
        description="USD per million tokens, by model; overrides the built-in table.",
    )

    sentry_dsn: str | None = Field(
        None,
        alias="SENTRY_DSN",
        description="Sentry DSN. Unset: Sentry is disabled. Document text, request bodies "
        "and secrets are scrubbed from events.",
    )
    sentry_environment: str = Field(
        "production", alias="SENTRY_ENVIRONMENT", description="Sentry environment name."
    )
    statsd_host: str | None = Field(
        None,
        alias="STATSD_HOST",
        description="statsd host (Graphite, statsd_exporter, Telegraf...). Unset: metrics "
        "are disabled and nothing is sent.",
    )
    statsd_port: int = Field(
        8125, ge=1, le=65535, alias="STATSD_PORT", description="statsd UDP port."
    )
    statsd_prefix: str = Field(
        "ingestd",
        alias="STATSD_PREFIX",
        description="Prefix of every metric path, e.g. ingestd.documents.completed.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged."
    )
    log_json: bool | None = Field(
        None,
        description="Log lines as JSON objects. Unset: JSON unless stderr is a terminal.",
    )
    log_file: Path | None = Field(
        None,
        description="Also write logs to this file (reopened on SIGUSR1, for logrotate). "
        "Unset: stderr only.",
    )

    chunk_target_tokens: int = Field(
        512,
        ge=16,
        description="Target chunk size in tokens, capped by the model's input limit.",
    )
    chunk_overlap_tokens: int = Field(
        64,
        ge=0,
        description="Tokens shared by consecutive chunks; smaller than the target size.",
    )
    # 512, not the API's 2048: ~4 MB of base64 per response in memory instead of ~16, and
    # with two requests in flight the next response arrives while the last is written:
    # as fast or faster in the pipeline benchmark, 30-45% less worker memory.
    batch_max_inputs: int = Field(
        512,
        ge=1,
        le=2048,
        description="Inputs per embedding request (the API takes 2048; smaller batches keep "
        "less in memory and overlap better).",
    )
    batch_max_tokens: int = Field(
        300_000, ge=1, le=300_000, description="Tokens per embedding request."
    )
    embed_concurrency: int = Field(
        2, ge=1, le=64, description="Embedding requests in flight per worker."
    )

    index_min_rows: int = Field(
        20_000,
        ge=1,
        description="Vectors needed before the HNSW index is built (then it is kept up "
        "incrementally).",
    )

    claim_batch: int = Field(
        64,
        ge=1,
        le=1000,
        description="Documents per claim, while their summed size stays within "
        "claim_max_bytes (the first is always taken). Small fresh documents claimed "
        "together run through the stages as one group.",
    )
    claim_max_bytes: int = Field(
        1 << 20, ge=0, description="Summed size of the documents one claim takes."
    )
    lease_seconds: float = Field(
        60.0,
        gt=0,
        description="Lease on a claimed document, renewed while a worker holds it; an "
        "expired lease returns the document to the queue.",
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="Attempts at a document (and at one API call) before it is given up as dead.",
    )
    retry_base_seconds: float = Field(
        2.0, gt=0, description="First retry delay; backoff doubles it, with full jitter."
    )
    retry_max_seconds: float = Field(600.0, gt=0, description="Longest retry delay.")
    service_wait_horizon_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest time one document may keep being rescheduled, without spending "
        "an attempt, for a service whose circuit is open (measured from its first such "
        "rescheduling; a stage finishing or a counted attempt restarts it). Past it the "
        "document ends dead (circuit_open) with a message saying how long it waited.",
    )
    poll_seconds: float = Field(
        5.0, gt=0, description="Fallback poll for work when a NOTIFY is lost."
    )
    stage_deadline_seconds: float = Field(
        1800.0,
        gt=0,
        description="Longest time a worker may spend in one stage before the supervisor "
        "replaces it.",
    )
    # Budgets (shared/budget.py): one stage of one input, in proportion to its size.
    # Rates: ~0.8 ms per text page and ~1 s per MiB of HTML on the 2-core dev machine,
    # so the defaults leave a margin of 50x or more before an input is called too big.
    budget_floor_seconds: float = Field(
        60.0,
        gt=0,
        description="Time budget of a parse, chunk or embed stage for the smallest "
        "input; the size-proportional rates below are added to it.",
    )
    budget_seconds_per_mib: float = Field(
        30.0,
        ge=0,
        description="Budget added per MiB of input: the file's bytes when parsing, its "
        "parsed text when chunking.",
    )
    budget_seconds_per_page: float = Field(
        0.05,
        ge=0,
        description="Budget added per page of a PDF, when parsing (the page count is "
        "known once the file is opened).",
    )
    budget_seconds_per_1k_tokens: float = Field(
        2.0,
        ge=0,
        description="Budget added per 1,000 tokens to embed, when embedding.",
    )
    budget_ceiling_seconds: float = Field(
        900.0,
        gt=0,
        description="Largest budget of one stage, whatever the input's size (never above "
        "stage_deadline_seconds). Parsing or chunking past its budget fails the document "
        "(invalid_input) on its first attempt; embedding past it is retried (deadline).",
    )

    heartbeat_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="A worker silent for longer is considered hung and replaced.",
    )
    drain_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="On a graceful stop or reload, how long workers may finish their "
        "current documents before they are killed.",
    )
    # Longer than the circuit breakers' 30 s reset: at least two trial calls have failed
    # before a drain gives up, so a service that only blinked is retried first.
    drain_blocked_seconds: float = Field(
        90.0,
        gt=0,
        description="run --drain: when every document left waits on an unavailable service "
        "(nothing else runnable or in flight) for this long, exit 3 naming the service; the "
        "documents stay queued.",
    )
    memory_soft_mb: int = Field(
        1024,
        ge=16,
        description="Per-worker memory (USS) ceiling: memory_strikes samples in a row above "
        "it recycle the worker after its current batch. Measured: a worker with the local "
        "model settles at ~700 MB (706 at the end of the README's main command); one with "
        "the OpenAI embedder peaks at ~46 MB in the pipeline benchmark, ~135 MB on a "
        "100 MB document.",
    )
    memory_hard_mb: int = Field(
        1536,
        ge=16,
        description="Per-worker memory (USS) limit: one sample above it kills the worker "
        "at once and releases its document with an attempt counted.",
    )
    memory_strikes: int = Field(
        3, ge=1, description="Samples in a row above memory_soft_mb before a recycle."
    )
    memory_check_seconds: float = Field(
        1.0, gt=0, description="Interval between memory samples of each worker."
    )
    recycle_after_documents: int | None = Field(
        None,
        ge=1,
        description="Replace a worker after this many documents. Unset: never.",
    )
    recycle_after_seconds: float | None = Field(
        None,
        gt=0,
        description="Replace a worker after this long. Unset: never.",
    )
    recycle_jitter: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Random extra fraction added to each worker's recycle limits, so that "
        "workers do not all recycle at once.",
    )
    restart_backoff_base_seconds: float = Field(
        0.5, gt=0, description="First delay before respawning a worker that failed."
    )
    restart_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest delay before respawning a worker."
    )
    crash_loop_limit: int = Field(
        10,
        ge=1,
        description="Rapid worker failures within crash_loop_window_seconds before the "
        "supervisor gives up and exits.",
    )
    crash_loop_window_seconds: float = Field(
        60.0, gt=0, description="Window in which crash_loop_limit failures stop the supervisor."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: options > environment > TOML file (> defaults, added by the library).
        # No .env file and no secrets directory: ingestd has never read either.
        load = _current_load()
        return (
            init_settings,
            _MappingEnvSource(settings_cls, load.environ),
            _TomlFileSource(settings_cls, load),
        )

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        # Checked here so that the error names the variable that set it; libpq's own
        # message would come later, from whichever command connects first, and quotes
        # the whole URL, password included.
        if value is None:
            return value
        scheme = value.split("://", 1)[0].lower() if "://" in value else None
        if scheme is not None and scheme not in ("postgresql", "postgres"):
            raise PydanticCustomError(
                "database_url",
                "must be a postgresql:// (or postgres://) URL, not {scheme}://",
                {"scheme": scheme},
            )
        try:
            psycopg.conninfo.conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            raise PydanticCustomError(
                "database_url",
                "must be a postgresql:// URL or a libpq key=value string "
                "(e.g. postgresql://ingestd@db.internal:5432/ingestd)",
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_target_tokens:
            raise _inconsistent(
                "chunk_overlap_tokens", "must be smaller than", "chunk_target_tokens"
            )
        if self.memory_soft_mb > self.memory_hard_mb:
            raise _inconsistent("memory_soft_mb", "must not exceed", "memory_hard_mb")
        if self.webhook_host is not None and self.webhook_port is None:
            raise _inconsistent("webhook_host", "needs", "webhook_port")
        return self

    def env_name(self, key: str) -> str:
        return env_name(key)


def _inconsistent(key: str, relation: str, other: str) -> PydanticCustomError:
    # The keys travel in the context so that the message can say where each came from.
    return PydanticCustomError(
        "inconsistent",
        "{key} {relation} {other}",
        {"key": key, "relation": relation, "other": other},
    )


SECRET_KEYS = frozenset({"openai_api_key", "llama_cloud_api_key", "webhook_secret", "sentry_dsn"})
# A table of values, which no single environment variable can carry: the TOML file only.
FILE_ONLY_KEYS = frozenset({"prices_per_million"})
_KEY_BY_ALIAS = {f.alias: key for key, f in Settings.model_fields.items() if f.alias}


def env_name(key: str) -> str:
    """The environment variable that sets ``key``."""
    alias = Settings.model_fields[key].alias
    assert alias is not None  # every field has one, from alias_generator
    return alias


# Values never quoted back in an error: the secrets, and the database URL (its password).
_NOT_ECHOED = SECRET_KEYS | {"database_url"}
# A key set through a conventional variable when its own is unset (_MappingEnvSource).
_FALLBACK_VARIABLES = {"database_url": "DATABASE_URL"}


def _origin(key: str, options: Mapping[str, Any], load: _Load, names: Mapping[str, str]) -> str:
    if key in options:
        return f"command-line option {names[key]}" if key in names else f"option '{key}'"
    if load.environ.get(env_name(key)):
        return f"environment variable {env_name(key)}"
    fallback = _FALLBACK_VARIABLES.get(key)
    if fallback and load.environ.get(fallback):
        return f"environment variable {fallback}"
    if key in load.file_keys:
        return f"{load.config_path}: key '{key}'"
    return f"default of '{key}'"


def load_settings(
    config_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    option_names: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build and validate the settings; raise ConfigError with a readable message.

    ``option_names`` says how an override was given (``{"workers": "--workers"}``), so
    that an error blames the command-line option the operator typed."""
    environ = os.environ if environ is None else environ
    load = _Load(environ, _config_path(config_path, environ))
    # An option left as None (an absent command-line flag) does not override anything.
    options = {k: v for k, v in overrides.items() if v is not None}
    token = _LOAD.set(load)
    try:
        return Settings(**options)
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_describe(exc, options, load, option_names or {})) from None
    finally:
        _LOAD.reset(token)


def _describe(
    exc: ValidationError, options: Mapping[str, Any], load: _Load, names: Mapping[str, str]
) -> str:
    lines = []
    for err in exc.errors():
        if err["type"] == "inconsistent":
            # A model-level error: its input is every value, secrets included, so it is
            # never shown; the two keys and their sources are.
            keys = (err["ctx"]["key"], err["ctx"]["other"])
            where = "; ".join(_origin(k, options, load, names) for k in keys)
            lines.append(f"{where}: {err['msg']}")
            continue
        loc = str(err["loc"][0]) if err["loc"] else ""
        key = _KEY_BY_ALIAS.get(loc, loc)
        where = _origin(key, options, load, names) if key else "settings"
        detail = err["msg"]
        if err["type"] == "literal_error":
            detail = f"must be one of {err['ctx']['expected']}"
        shown = "" if key in _NOT_ECHOED or not key else f" (got {err.get('input')!r})"
        lines.append(f"{where}: {detail}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
