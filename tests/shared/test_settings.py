"""Settings: where each value comes from, and what a wrong one says."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import Settings, env_name, load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ingestd.toml"
    path.write_text(text)
    return path


def _error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_an_option_beats_the_environment_which_beats_the_file_which_beats_the_default(
    tmp_path: Path,
) -> None:
    config = _toml(tmp_path, "workers = 3\nclaim_batch = 9\nlease_seconds = 7.5\n")
    environ = {"INGESTD_WORKERS": "4", "INGESTD_CLAIM_BATCH": "10"}

    settings = load_settings(config, environ=environ, workers=5)

    assert settings.workers == 5  # option over environment and file
    assert settings.claim_batch == 10  # environment over file
    assert settings.lease_seconds == 7.5  # file over default
    assert settings.max_attempts == 5  # default


def test_an_option_given_as_none_does_not_override() -> None:
    settings = load_settings(environ={"INGESTD_WORKERS": "4"}, workers=None)

    assert settings.workers == 4


def test_standard_variable_names_set_their_keys_and_secrets_stay_hidden() -> None:
    environ = {
        "OPENAI_API_KEY": "sk-from-env",
        "STATSD_HOST": "metrics.local",
        "STATSD_PORT": "9125",
        "SENTRY_ENVIRONMENT": "staging",
    }

    settings = load_settings(environ=environ)
    # The INGESTD_ spelling is not the variable for a key that has a standard one, and
    # is refused rather than ignored.
    assert _error(environ={**environ, "INGESTD_STATSD_PREFIX": "x"}).endswith(
        "did you mean STATSD_PREFIX?"
    )

    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-env"
    assert "sk-from-env" not in repr(settings)
    assert (settings.statsd_host, settings.statsd_port) == ("metrics.local", 9125)
    assert settings.sentry_environment == "staging"
    assert settings.statsd_prefix == "ingestd"
    assert env_name("openai_api_key") == "OPENAI_API_KEY"
    assert env_name("statsd_prefix") == "STATSD_PREFIX"
    assert env_name("claim_batch") == "INGESTD_CLAIM_BATCH"


def test_variable_names_are_matched_exactly_and_an_empty_value_is_unset() -> None:
    settings = load_settings(environ={"ingestd_workers": "9", "INGESTD_EMBEDDER": ""})

    assert settings.workers == 2
    assert settings.embedder == "auto"


def test_keys_may_sit_under_an_ingestd_table(tmp_path: Path) -> None:
    text = '[ingestd]\nembedder = "hash"\n[ingestd.prices_per_million]\nm = 1.5\n'
    config = _toml(tmp_path, text)

    settings = load_settings(config, environ={})

    assert settings.embedder == "hash"
    assert settings.prices_per_million == {"m": 1.5}


def test_the_file_may_be_named_by_ingestd_config(tmp_path: Path) -> None:
    config = _toml(tmp_path, "workers = 6\n")

    assert load_settings(environ={"INGESTD_CONFIG": str(config)}).workers == 6


def test_a_given_environ_isolates_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGESTD_WORKERS", "7")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-process")
    monkeypatch.setenv("INGESTD_CONFIG", str(_toml(tmp_path, "workers = 8\n")))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "process-state"))

    settings = load_settings(environ={"HOME": str(tmp_path / "given-home")})

    assert settings.workers == 2
    assert settings.openai_api_key is None
    assert settings.home == tmp_path / "given-home" / ".local" / "state" / "ingestd"
    # ...and without one, the process environment is read.
    assert load_settings().workers == 7


def test_home_defaults_under_xdg_state_home() -> None:
    assert load_settings(environ={"XDG_STATE_HOME": "/state"}).home == Path("/state/ingestd")
    assert load_settings(environ={"INGESTD_HOME": "/h", "XDG_STATE_HOME": "/s"}).home == Path("/h")


def test_an_unknown_key_in_the_file_is_fatal(tmp_path: Path) -> None:
    config = _toml(tmp_path, "workers = 2\nworkerz = 3\n")

    message = _error(config, environ={})

    assert f"{config}: unknown key(s) workerz" in message
    assert "known keys: " in message and "workers" in message


def test_a_variable_name_is_not_a_key_in_the_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, '[ingestd]\nOPENAI_API_KEY = "sk-in-file"\n')

    message = _error(config, environ={})

    assert "unknown key(s) OPENAI_API_KEY" in message
    assert "sk-in-file" not in message


def test_keys_beside_the_ingestd_table_are_refused_not_ignored(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'workers = 3\n[ingestd]\nembedder = "hash"\n')

    message = _error(config, environ={})

    assert "workers beside the [ingestd] table would be ignored" in message


def test_a_missing_or_broken_file_is_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert _error(missing, environ={}) == f"config file not found: {missing}"
    assert _error(environ={"INGESTD_CONFIG": str(missing)}) == f"config file not found: {missing}"
    assert _error(tmp_path, environ={}) == f"config file is not a file: {tmp_path}"
    broken = _toml(tmp_path, "workers = [\n")
    assert _error(broken, environ={}).startswith(f"config file {broken} is not valid TOML: ")


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("file", "{config}: key 'workers'"),
        ("environment", "environment variable INGESTD_WORKERS"),
        ("option", "option 'workers'"),
    ],
)
def test_a_bad_value_names_its_key_its_source_and_what_is_allowed(
    tmp_path: Path, source: str, where: str
) -> None:
    config = _toml(tmp_path, "workers = 0\n" if source == "file" else "")
    environ = {"INGESTD_WORKERS": "0"} if source == "environment" else {}
    options = {"workers": 0} if source == "option" else {}

    message = _error(config, environ=environ, **options)

    assert message.startswith("invalid configuration:\n  ")
    got = "'0'" if source == "environment" else "0"
    line = f"{where.format(config=config)}: Input should be greater than or equal to 1 (got {got})"
    assert line in message.splitlines()[1]


def test_a_bad_choice_lists_the_allowed_values() -> None:
    message = _error(environ={"INGESTD_EMBEDDER": "magic"})

    assert (
        "environment variable INGESTD_EMBEDDER: must be one of 'auto', 'openai', 'local' or"
        " 'hash' (got 'magic')"
    ) in message


def test_every_bad_value_is_reported_at_once() -> None:
    message = _error(environ={"INGESTD_WORKERS": "0", "STATSD_PORT": "x"}, http_port=-1)

    assert len(message.splitlines()) == 4
    assert "environment variable STATSD_PORT: " in message


def test_an_unknown_option_is_fatal() -> None:
    assert "option 'workerz': Extra inputs are not permitted" in _error(environ={}, workerz=3)


def test_a_bad_secret_is_reported_without_its_value() -> None:
    message = _error(environ={}, openai_api_key=12345)

    assert "option 'openai_api_key'" in message
    assert "12345" not in message


def test_inconsistent_values_name_both_sources_and_no_secret(tmp_path: Path) -> None:
    config = _toml(tmp_path, "chunk_target_tokens = 32\n")
    environ = {"INGESTD_CHUNK_OVERLAP_TOKENS": "32", "OPENAI_API_KEY": "sk-do-not-show"}

    message = _error(config, environ=environ)

    assert message.splitlines()[1] == (
        f"  environment variable INGESTD_CHUNK_OVERLAP_TOKENS; {config}: key"
        " 'chunk_target_tokens': chunk_overlap_tokens must be smaller than chunk_target_tokens"
    )
    assert "sk-do-not-show" not in message


def test_memory_soft_above_hard_is_refused() -> None:
    message = _error(environ={}, memory_soft_mb=4096)

    assert "option 'memory_soft_mb'; default of 'memory_hard_mb'" in message
    assert "memory_soft_mb must not exceed memory_hard_mb" in message


def test_prices_come_from_the_file_only() -> None:
    message = _error(environ={"INGESTD_PRICES_PER_MILLION": '{"m": 1}'})

    assert message == (
        "INGESTD_PRICES_PER_MILLION: set prices_per_million in the TOML file, not the environment"
    )


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})

    with pytest.raises(ValueError, match="frozen"):
        settings.workers = 3  # type: ignore[misc]
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("INGESTD_WORKER", "INGESTD_WORKERS"), ("INGESTD_EMBEDER", "INGESTD_EMBEDDER")],
)
def test_a_misspelt_variable_is_refused_naming_the_closest(name: str, suggestion: str) -> None:
    message = _error(environ={name: "4"})
    assert message == f"unknown environment variable {name}; did you mean {suggestion}?"


def test_variables_that_are_not_settings_are_known() -> None:
    env = {"INGESTD_CONFIG": "", "INGESTD_METRICS_STRICT": "1", "INGESTD_TEST_ADMIN_URL": "x"}
    assert load_settings(environ=env).workers == Settings.model_fields["workers"].default


def test_database_url_is_the_conventional_fallback() -> None:
    assert load_settings(environ={"DATABASE_URL": "postgresql://h/a"}).database_url == (
        "postgresql://h/a"
    )
    both = {"DATABASE_URL": "postgresql://h/a", "INGESTD_DATABASE_URL": "postgresql://h/b"}
    assert load_settings(environ=both).database_url == "postgresql://h/b"


def test_an_error_names_the_command_line_option_that_set_the_value() -> None:
    message = _error(environ={}, option_names={"workers": "--workers"}, workers=0)

    assert "command-line option --workers: Input should be greater" in message


def test_a_value_from_database_url_is_blamed_on_database_url() -> None:
    message = _error(environ={"DATABASE_URL": "sqlite:///tmp/x.db"})

    assert "environment variable DATABASE_URL: must be a postgresql://" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ingestd@db.internal:5432/ingestd",
        "postgres://u:p@h/d?sslmode=require",
        "host=/run/postgresql dbname=ingestd",
        "postgresql:///ingestd?host=/tmp",
    ],
)
def test_postgresql_urls_and_key_value_strings_are_accepted(url: str) -> None:
    assert load_settings(environ={"INGESTD_DATABASE_URL": url}).database_url == url
