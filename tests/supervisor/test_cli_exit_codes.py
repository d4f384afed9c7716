"""The command line's global options, configuration precedence, and exit codes.

Every failure is one line on stderr and a code from ``shared/exitcodes.py``, never a
traceback: the real CLI runs in-process (``main``) when it fails before any logging is
configured, and as a subprocess otherwise, against real sockets (a closed port, the
OpenAI emulator) and the real test database.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingestd.shared import exitcodes
from ingestd.shared.errors import (
    AuthError,
    ConfigError,
    InvalidInput,
    NotFound,
    QuotaExhausted,
    TransientError,
)
from ingestd.supervisor.children import Kind, log_fields
from ingestd.supervisor.cli import (
    ServiceError,
    UsageError,
    _failure,
    build_parser,
    main,
    settings_for,
)
from ingestd.supervisor.control import SupervisorNotRunning

ROOT = Path(__file__).resolve().parents[2]

# The smallest argument list each command accepts (a command added later without an entry
# here is still checked for the global options, only not parsed).
MINIMAL_ARGS: dict[str, list[str]] = {
    "run": [],
    "ingest": ["a.txt"],
    "status": [],
    "show": ["abc"],
    "search": ["query"],
    "db": ["url"],
    "retry": ["abc"],
    "delete": ["abc"],
    "reembed": [],
    "profile": [],
}
GLOBAL_OPTIONS = ("--config", "--log-level", "-v", "--verbose", "-q", "--quiet", "--log-format")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The process environment without any ingestd setting; returns a config file path."""
    for name in list(os.environ):
        if name.startswith(("INGESTD_", "OPENAI_", "DATABASE_URL")) and not name.startswith(
            ("INGESTD_TEST_", "INGESTD_METRICS_STRICT")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INGESTD_HOME", str(tmp_path / "home"))
    return tmp_path / "ingestd.toml"


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own way out
        return int(exc.code or 0)


def _commands() -> dict[str, Any]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return dict(sub.choices)


# -- global options ---------------------------------------------------------------------


def test_every_command_takes_every_global_option() -> None:
    for name, sp in _commands().items():
        strings = {s for action in sp._actions for s in action.option_strings}
        missing = [o for o in GLOBAL_OPTIONS if o not in strings]
        assert not missing, f"`ingestd {name}` lacks {missing}: add it with add_command()"


@pytest.mark.parametrize("command", sorted(MINIMAL_ARGS))
@pytest.mark.parametrize(
    ("options", "level", "log_json"),
    [
        (["--log-level", "debug"], "DEBUG", None),
        (["-v"], "DEBUG", None),
        (["--verbose"], "DEBUG", None),
        (["-q"], "WARNING", None),
        (["--log-format", "json"], None, True),
        (["--log-format", "console", "--log-level", "ERROR"], "ERROR", False),
    ],
)
@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_or_after_any_command(
    command: str, options: list[str], level: str | None, log_json: bool | None, where: str
) -> None:
    cmd = [command, *MINIMAL_ARGS[command]]
    args = build_parser().parse_args([*options, *cmd] if where == "before" else [*cmd, *options])

    from ingestd.supervisor.cli import _log_overrides

    assert _log_overrides(args) == {"log_level": level, "log_json": log_json}


def test_an_option_after_the_command_wins_over_the_same_option_before_it() -> None:
    args = build_parser().parse_args(["--log-level", "ERROR", "status", "--log-level", "DEBUG"])
    assert args.log_level == "DEBUG"
    # Not given after it: the value before the command stands.
    args = build_parser().parse_args(["--log-format", "json", "status"])
    assert args.log_format == "json"


@pytest.mark.parametrize(
    "argv",
    [["-v", "-q", "status"], ["-v", "status", "-q"], ["--log-level", "INFO", "status", "-v"]],
)
def test_more_than_one_level_option_is_a_usage_error(
    argv: list[str], clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("ingestd status: give one of ") and err.count("\n") == 1


def test_ingest_quiet_keeps_its_meaning_through_the_global_option() -> None:
    for argv in (["ingest", "-q", "a"], ["-q", "ingest", "a"], ["ingest", "a", "--quiet"]):
        assert build_parser().parse_args(argv).quiet is True
    assert build_parser().parse_args(["ingest", "a"]).quiet is False


# -- precedence: command line > environment > file > default -----------------------------


@pytest.mark.parametrize(
    ("cli", "env", "file", "expected"),
    [
        (["-v"], "ERROR", "WARNING", "DEBUG"),  # command line over environment (and file)
        (["-q"], None, "ERROR", "WARNING"),  # command line over file
        ([], "ERROR", "DEBUG", "ERROR"),  # environment over file
        ([], "DEBUG", None, "DEBUG"),  # environment over default
        ([], None, "ERROR", "ERROR"),  # file over default
        ([], None, None, "INFO"),  # the default
    ],
)
def test_log_level_precedence(
    cli: list[str],
    env: str | None,
    file: str | None,
    expected: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is not None:
        monkeypatch.setenv("INGESTD_LOG_LEVEL", env)
    clean_env.write_text(f'log_level = "{file}"\n' if file else "")
    args = build_parser().parse_args(["--config", str(clean_env), *cli, "status"])

    assert settings_for(args).log_level == expected


@pytest.mark.parametrize(
    ("cli", "env", "file", "expected"),
    [
        (["--log-format", "console"], "true", "true", False),
        (["--log-format", "json"], None, "false", True),
        ([], "false", "true", False),
        ([], None, "true", True),
        ([], None, None, None),
    ],
)
def test_log_format_precedence(
    cli: list[str],
    env: str | None,
    file: str | None,
    expected: bool | None,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is not None:
        monkeypatch.setenv("INGESTD_LOG_JSON", env)
    clean_env.write_text(f"log_json = {file}\n" if file else "")
    args = build_parser().parse_args(["status", *cli, "--config", str(clean_env)])

    assert settings_for(args).log_json is expected


def test_workers_precedence_from_the_command_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_env.write_text("workers = 3\n")
    monkeypatch.setenv("INGESTD_WORKERS", "4")
    args = build_parser().parse_args(["--config", str(clean_env), "run", "--workers", "5"])
    assert settings_for(args, workers=args.workers).workers == 5
    args = build_parser().parse_args(["--config", str(clean_env), "run"])
    assert settings_for(args, workers=args.workers).workers == 4


# -- configuration errors name the key, the source that set it, and what is allowed -------


def test_a_bad_file_value_overridden_by_an_option_is_not_an_error(clean_env: Path) -> None:
    clean_env.write_text('workers = 0\nlog_level = "LOUD"\n')
    args = build_parser().parse_args(["--config", str(clean_env), "-v", "run", "--workers", "3"])

    settings = settings_for(args, workers=args.workers)

    assert (settings.workers, settings.log_level) == (3, "DEBUG")


def test_a_bad_option_is_blamed_on_the_option_not_the_file(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.write_text("workers = 0\n")
    # argparse lets 300 through (a whole number >= 1); the settings cap it at 256.
    assert main(["--config", str(clean_env), "run", "--workers", "300"]) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert "command-line option --workers: Input should be less than or equal to 256" in err
    assert str(clean_env) not in err


@pytest.mark.parametrize(
    ("source", "where"),
    [
        ("file", "{config}: key 'log_level'"),
        ("env", "environment variable INGESTD_LOG_LEVEL"),
    ],
)
def test_a_bad_log_level_names_its_source_and_the_allowed_values(
    source: str,
    where: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.write_text('log_level = "LOUD"\n' if source == "file" else "")
    if source == "env":
        monkeypatch.setenv("INGESTD_LOG_LEVEL", "LOUD")

    assert main(["status", "--config", str(clean_env)]) == exitcodes.EXIT_USAGE

    err = capsys.readouterr().err
    expected = where.format(config=clean_env)
    assert f"{expected}: must be one of 'DEBUG', 'INFO', 'WARNING' or 'ERROR'" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("variable", ["INGESTD_DATABASE_URL", "DATABASE_URL"])
def test_a_database_url_of_another_kind_is_refused_naming_its_variable_not_its_password(
    variable: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, "mysql://admin:hunter2@db.internal/app")

    assert main(["status"]) == exitcodes.EXIT_USAGE

    err = capsys.readouterr().err
    assert f"environment variable {variable}: must be a postgresql://" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_a_malformed_key_value_database_url_is_refused(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INGESTD_DATABASE_URL", "host=db password=hunter2 nonsense")

    assert main(["status"]) == exitcodes.EXIT_USAGE

    err = capsys.readouterr().err
    assert "environment variable INGESTD_DATABASE_URL: must be a postgresql:// URL" in err
    assert "hunter2" not in err


# -- usage errors end before anything is touched -----------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: command"),
        (["status", "--watch", "--interval", "0"], "0.0 is not more than 0"),
        (["status", "--interval", "nan"], "nan is not more than 0"),
        (["run", "--workers", "0"], "0 is not 1 or more"),
        (["profile", "--slot", "-1"], "-1 is not 0 or more"),
        (["db", "vacuum"], "invalid choice: 'vacuum'"),
        (["status", "--log-level", "loud"], "invalid choice: 'LOUD'"),
        (["status", "--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == exitcodes.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


# -- every failure has its code -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UsageError("x"), exitcodes.EXIT_USAGE),
        (ConfigError("x"), exitcodes.EXIT_USAGE),
        (NotFound("no document matches 'x'"), exitcodes.EXIT_FAILED),
        (SupervisorNotRunning("no running ingestd supervisor"), exitcodes.EXIT_UNREACHABLE),
        (psycopg.OperationalError("connection refused"), exitcodes.EXIT_UNREACHABLE),
        (psycopg.errors.UndefinedTable("no table"), exitcodes.EXIT_FAILED),
        (ServiceError("the embedding API", TransientError("down")), exitcodes.EXIT_UNREACHABLE),
        (ServiceError("the embedding API", QuotaExhausted("no")), exitcodes.EXIT_UNREACHABLE),
        (ServiceError("the embedding API", AuthError("401")), exitcodes.EXIT_USAGE),
        (ServiceError("the embedding API", InvalidInput("long")), exitcodes.EXIT_USAGE),
        (PermissionError(13, "Permission denied", "/srv/x"), exitcodes.EXIT_FAILED),
        (ValueError("a bug"), exitcodes.EXIT_CRASH),
    ],
)
def test_each_failure_maps_to_its_exit_code_and_one_line(exc: Exception, code: int) -> None:
    got, message = _failure(exc)
    assert got == code
    assert message and "\n" not in message


def test_the_readme_exit_code_table_lists_every_code() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    listed = {int(m) for m in re.findall(r"^\| `(\d+)` \|", section, flags=re.M)}
    defined = {v for k, v in vars(exitcodes).items() if k.startswith("EXIT_")}
    assert listed == defined


# -- the HTTP child is not worker 0 ---------------------------------------------------------


def test_log_lines_name_the_http_child_as_itself_and_a_worker_by_its_slot() -> None:
    assert log_fields(Kind.HTTP, 0) == {"child": "http"}
    assert log_fields(Kind.WORKER, 0) == {"worker_slot": 0}


# -- services out of reach: real processes, real sockets ------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ingestd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGESTD_", "OPENAI_"))}
    env.pop("DATABASE_URL", None)
    env.update(INGESTD_HOME=str(tmp_path / "home"), INGESTD_EMBEDDER="hash", PYTHONPATH=str(ROOT))
    return env


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--drain"],
        ["ingest", "README.md"],
        ["status"],
        ["show", "abc"],
        ["search", "anything"],
        ["db", "migrate"],
        ["retry", "abc"],
        ["delete", "abc"],
        ["reembed", "--yes"],
        ["profile"],
    ],
)
def test_an_unreachable_database_exits_3_with_one_line(
    argv: list[str], closed_port: int, tmp_path: Path
) -> None:
    env = _base_env(tmp_path)
    env["INGESTD_DATABASE_URL"] = f"postgresql://ingestd@127.0.0.1:{closed_port}/ingestd"
    if argv[0] == "profile":
        pytest.importorskip("memray")

    proc = _ingestd(env, *argv)

    assert proc.returncode == exitcodes.EXIT_UNREACHABLE, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"ingestd {argv[0]}: cannot reach the database: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.fixture
def openai_space(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The test database holding 256-dimension text-embedding-3-small vectors."""
    from ingestd.shared.db.space import EmbeddingSpace, ensure_space

    ensure_space(conn, EmbeddingSpace("openai", "text-embedding-3-small", 256))
    yield


def _search_env(cli_env: dict[str, str], base_url: str, key: str) -> dict[str, str]:
    return {
        **cli_env,
        "INGESTD_EMBEDDER": "openai",
        "INGESTD_EMBEDDING_DIMENSIONS": "256",
        "OPENAI_API_KEY": key,
        "OPENAI_BASE_URL": base_url,
        # Retries still happen (the API's own policy), only quickly.
        "INGESTD_RETRY_BASE_SECONDS": "0.01",
        "INGESTD_RETRY_MAX_SECONDS": "0.05",
    }


def test_search_with_the_embedding_api_unreachable_exits_3_with_one_line(
    openai_space: None, cli_env: dict[str, str], closed_port: int
) -> None:
    env = _search_env(cli_env, f"http://127.0.0.1:{closed_port}/v1", "sk-anything")

    proc = _ingestd(env, "search", "hello")

    assert proc.returncode == exitcodes.EXIT_UNREACHABLE, proc.stderr[-2000:]
    assert proc.stderr.startswith("ingestd search: the embedding API failed: transient: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_search_logs_its_retries_only_when_asked_in_the_format_asked(
    openai_space: None, cli_env: dict[str, str], closed_port: int
) -> None:
    env = _search_env(cli_env, f"http://127.0.0.1:{closed_port}/v1", "sk-anything")

    proc = _ingestd(env, "search", "hello", "-v", "--log-format", "json")

    assert proc.returncode == exitcodes.EXIT_UNREACHABLE
    *logged, last = proc.stderr.splitlines()
    lines = [json.loads(line) for line in logged]
    assert any(line["level"] == "info" and "retrying" in line["event"] for line in lines)
    assert last.startswith("ingestd search: the embedding API failed")


def test_search_with_a_wrong_api_key_exits_2_and_with_the_right_one_0(
    openai_space: None, cli_env: dict[str, str], openai_emulator: Any
) -> None:
    from tests.emulators.openai_api import DEFAULT_API_KEY

    wrong = _ingestd(_search_env(cli_env, openai_emulator.base_url, "sk-wrong"), "search", "hi")
    right = _ingestd(
        _search_env(cli_env, openai_emulator.base_url, DEFAULT_API_KEY), "search", "hi"
    )

    assert wrong.returncode == exitcodes.EXIT_USAGE, wrong.stderr[-2000:]
    assert wrong.stderr.startswith("ingestd search: the embedding API refused: auth: ")
    assert "Traceback" not in wrong.stderr
    assert right.returncode == exitcodes.EXIT_OK, right.stderr[-2000:]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["show", "0123abcd"], exitcodes.EXIT_FAILED, "no document matches '0123abcd'"),
        (["retry", "0123abcd"], exitcodes.EXIT_FAILED, "no document matches '0123abcd'"),
        (["delete", "0123abcd"], exitcodes.EXIT_FAILED, "no document matches '0123abcd'"),
        (["profile"], exitcodes.EXIT_UNREACHABLE, "no running ingestd supervisor"),
    ],
)
def test_what_is_not_there_gives_its_code_and_one_line(
    argv: list[str],
    code: int,
    message: str,
    conn: psycopg.Connection[Any],
    cli_env: dict[str, str],
) -> None:
    if argv[0] == "profile":
        pytest.importorskip("memray")

    proc = _ingestd(cli_env, *argv)

    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(
    cli_env: dict[str, str], conn: psycopg.Connection[Any]
) -> None:
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already exited
    proc = subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "status", "--wide"],
        env=cli_env,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    os.close(write_end)
    assert proc.returncode == exitcodes.EXIT_BROKEN_PIPE
    assert proc.stderr == ""  # no traceback, no "Exception ignored" from the exit flush
