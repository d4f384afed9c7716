"""Command lines that ask for nothing sensible end with a usage message and exit 2,
before any database is touched (the fast tier refuses a connection)."""

from __future__ import annotations

import pytest

from ingestd.supervisor.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "x", "-k", "-3"], "-3 is not 1 or more"),
        (["search", "x", "-k", "many"], "'many' is not a whole number"),
        (["search", ""], "the query is empty"),
        (["search", "   "], "the query is empty"),
        (["retry"], "give the document ids to requeue, or --all-failed"),
    ],
)
def test_usage_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own way out
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_accepted_before_or_after_the_subcommand(
    where: str, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    config = ["--config", str(missing)]
    argv = [*config, "status"] if where == "before" else ["status", *config]
    assert main(argv) == 2
    assert f"config file not found: {missing}" in capsys.readouterr().err
