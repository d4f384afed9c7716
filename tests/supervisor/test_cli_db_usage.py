"""``ingestd db`` command lines that cannot work end with one line and exit 2, before
any server is started (the fast tier refuses a connection and pgserver)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ingestd.shared.db import embedded
from ingestd.supervisor import dbcmd
from ingestd.supervisor.cli import main


@pytest.fixture
def external(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INGESTD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INGESTD_DATABASE_URL", "postgresql://ingestd@db.invalid/ingestd")


@pytest.mark.parametrize("command", ["start", "stop"])
def test_start_and_stop_refuse_when_the_database_is_not_embedded(
    external: None, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", command]) == 2
    err = capsys.readouterr().err
    assert f"`ingestd db {command}` manages only the embedded one" in err
    assert err.count("\n") == 1


def test_status_says_the_database_is_not_embedded(
    external: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"embedded": False, "running": None}


def _fake_psql(directory: Path) -> Path:
    directory.mkdir()
    path = directory / "psql"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_psql_is_the_embedded_servers_own_first_and_the_one_on_path_for_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _fake_psql(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(on_path.parent))
    bundled = embedded.bundled_psql()
    assert bundled is not None and bundled != on_path

    assert dbcmd.find_psql(embedded_server=True) == bundled
    assert dbcmd.find_psql(embedded_server=False) == on_path


def test_no_psql_at_all_is_a_one_line_error_exit_2(
    external: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    monkeypatch.setattr(embedded, "bundled_psql", lambda: None)

    assert main(["db", "shell", "-c", "select 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ingestd db: no psql found: install the PostgreSQL client")
    assert err.count("\n") == 1


def test_psql_arguments_after_a_double_dash_reach_psql(capsys: pytest.CaptureFixture[str]) -> None:
    from ingestd.supervisor.cli import build_parser

    args = build_parser().parse_args(["db", "shell", "-c", "select 1", "--", "-At", "-X"])
    assert (args.command, args.sql, args.psql_args) == ("db", ["select 1"], ["--", "-At", "-X"])
    assert dbcmd._psql_args(args.psql_args) == ["-At", "-X"]
