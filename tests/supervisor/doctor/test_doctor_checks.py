"""The doctor's checks one by one, where no database is needed (the fast tier)."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestd.shared.settings import Settings, load_settings
from ingestd.supervisor.doctor import parser, telemetry, unit
from ingestd.supervisor.doctor.command import render
from ingestd.supervisor.doctor.database import mask_url
from ingestd.supervisor.doctor.disk import free_space
from ingestd.supervisor.doctor.findings import Finding, Result, Status, ok
from ingestd.supervisor.doctor.runner import Context, NamedCheck, Options, run_checks


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings(environ={"INGESTD_HOME": str(tmp_path / "home"), **env})


def context(tmp_path: Path, options: Options | None = None, **env: str) -> Context:
    return Context(settings(tmp_path, **env), options or Options())


# -- masking ----------------------------------------------------------------------------------

_PASSWORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~!$", min_size=6, max_size=30)


@given(password=_PASSWORD)
def test_a_url_password_is_never_shown(password: str) -> None:
    masked = mask_url(f"postgresql://ingestd:{password}@db.internal:5432/ingestd")
    assert masked == "postgresql://ingestd:***@db.internal:5432/ingestd"
    masked = mask_url(
        f"postgresql://db.internal/ingestd?user=x&password={password}&sslmode=require"
    )
    assert masked == "postgresql://db.internal/ingestd?user=x&password=***&sslmode=require"


@given(password=_PASSWORD)
def test_a_keyword_password_is_never_shown(password: str) -> None:
    assert mask_url(f"host=db password={password} dbname=x") == "host=db password=*** dbname=x"
    quoted = f"host=db password='{password} with space' dbname=x"
    assert mask_url(quoted) == "host=db password=*** dbname=x"


def test_a_url_without_password_is_shown_as_is() -> None:
    url = "postgresql://ingestd@db.internal:5432/ingestd"
    assert mask_url(url) == url


# -- running checks ---------------------------------------------------------------------------


def test_an_exception_in_a_check_is_its_failure(tmp_path: Path) -> None:
    def broken(_ctx: Context) -> Result:
        raise RuntimeError("the first line\nand a second that is not shown")

    def fine(_ctx: Context) -> Result:
        return ok("fine")

    found = run_checks([NamedCheck("broken", broken), NamedCheck("fine", fine)], context(tmp_path))
    assert [f.result.status for f in found] == [Status.FAIL, Status.OK]
    assert found[0].result.finding == "unexpected RuntimeError: the first line"
    assert found[0].result.fix


def test_a_hung_check_fails_at_its_deadline_and_the_rest_still_report(tmp_path: Path) -> None:
    release = threading.Event()

    def hung(_ctx: Context) -> Result:
        release.wait()
        return ok("too late")

    ctx = context(tmp_path, Options(timeout=0.2))
    try:
        found = run_checks(
            [NamedCheck("hung", hung), NamedCheck("fine", lambda _c: ok("fine"))], ctx
        )
    finally:
        release.set()
    assert found[0].result.status is Status.FAIL and not found[0].answered
    assert found[0].result.finding == "no answer within 0.2 s"
    assert found[1].result.status is Status.OK


def test_after_a_hung_check_on_a_shared_connection_the_rest_are_skipped(tmp_path: Path) -> None:
    release = threading.Event()
    ran: list[str] = []

    def hung(_ctx: Context) -> Result:
        release.wait()
        return ok("too late")

    def later(_ctx: Context) -> Result:
        ran.append("later")
        return ok("ran")

    ctx = context(tmp_path, Options(timeout=0.2))
    try:
        found = run_checks([NamedCheck("a", hung), NamedCheck("b", later)], ctx, parallel=False)
    finally:
        release.set()
    assert [f.result.status for f in found] == [Status.FAIL, Status.SKIP]
    assert found[1].result.finding == "not run: a hung"
    assert ran == []


# -- the systemd unit -------------------------------------------------------------------------


def _unit(tmp_path: Path, body: str) -> Context:
    path = tmp_path / "ingestd.service"
    path.write_text("[Unit]\nDescription=x\n\n[Service]\n" + body)
    return context(tmp_path, Options(unit=path))


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ("ExecStart={exe} run\nEnvironmentFile={env}\n", Status.OK, "starts"),
        ("ExecStart=-{exe} run\nEnvironmentFile=-{env}\n", Status.OK, "starts"),
        (
            "ExecStart=/nonexistent/bin/ingestd run\nEnvironmentFile={env}\n",
            Status.FAIL,
            "does not exist",
        ),
        ("ExecStart=ingestd run\n", Status.FAIL, "not an absolute path"),
        (
            "ExecStart={exe} run\nEnvironmentFile=/nonexistent/ingestd.env\n",
            Status.FAIL,
            "will not start",
        ),
        (
            "ExecStart={exe} run\nEnvironmentFile=-/nonexistent/ingestd.env\n",
            Status.WARN,
            "does not exist",
        ),
        ("ExecStart={exe} run\n", Status.WARN, "reads no EnvironmentFile"),
        (
            "ExecStart=/nonexistent/x\nExecStart=\nExecStart={exe} run\nEnvironmentFile={env}\n",
            Status.OK,
            "starts",
        ),
        ("Description=no ExecStart here\n", Status.FAIL, "has no ExecStart"),
    ],
)
def test_the_unit_file(tmp_path: Path, body: str, status: Status, words: str) -> None:
    env = tmp_path / "ingestd.env"
    env.write_text("")
    ctx = _unit(tmp_path, body.format(exe=sys.executable, env=env))
    result = unit.check_unit(ctx)
    assert result.status is status, result
    assert words in result.finding
    assert (result.fix is None) == (status is Status.OK)


def test_the_repository_template_is_parsed_like_systemd(tmp_path: Path) -> None:
    template = Path(__file__).resolve().parents[3] / "systemd" / "ingestd.service"
    text = template.read_text()
    assert unit._values(text, "ExecStart") == ["/opt/ingestd/.venv/bin/ingestd run"]
    assert unit._values(text, "EnvironmentFile") == ["-/etc/ingestd/ingestd.env"]


# -- webhooks, statsd, Sentry, disk ------------------------------------------------------------


def test_webhooks_are_skipped_for_the_local_parser(tmp_path: Path) -> None:
    assert parser.check_webhook(context(tmp_path)).status is Status.SKIP


def test_webhooks_without_a_public_url_warn(tmp_path: Path) -> None:
    ctx = context(tmp_path, INGESTD_PARSER="llamaparse", LLAMA_CLOUD_API_KEY="llx-k")
    result = parser.check_webhook(ctx)
    assert result.status is Status.WARN and "INGESTD_PUBLIC_URL" in result.finding


def test_a_short_webhook_secret_fails(tmp_path: Path) -> None:
    ctx = context(
        tmp_path,
        INGESTD_PARSER="llamaparse",
        INGESTD_PUBLIC_URL="https://ingestd.example.com",
        INGESTD_WEBHOOK_SECRET="short",
    )
    result = parser.check_webhook(ctx)
    assert result.status is Status.FAIL and "short" not in result.finding.replace("shorter", "")


def test_a_secret_file_others_can_read_fails(tmp_path: Path) -> None:
    ctx = context(tmp_path, INGESTD_PARSER="llamaparse", INGESTD_PUBLIC_URL="https://x.example")
    ctx.settings.home.mkdir(parents=True)
    secret = ctx.settings.home / "webhook_secret"
    secret.write_text("a-secret-of-enough-length\n")
    secret.chmod(0o644)
    result = parser.check_webhook(ctx)
    assert result.status is Status.FAIL and result.fix == f"chmod 600 {secret}"
    secret.chmod(0o600)
    assert parser.check_webhook(ctx).status is Status.OK


def test_the_local_parser_without_a_key_for_llamaparse_fails(tmp_path: Path) -> None:
    result = parser.check_parser(context(tmp_path, INGESTD_PARSER="llamaparse"))
    assert result.status is Status.FAIL and "LLAMA_CLOUD_API_KEY" in result.finding


def test_statsd_unset_is_skipped(tmp_path: Path) -> None:
    assert telemetry.check_statsd(context(tmp_path)).status is Status.SKIP


def test_statsd_with_nothing_listening_warns(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Closed now: loopback answers the datagram with ICMP port unreachable.
    result = telemetry.check_statsd(
        context(tmp_path, STATSD_HOST="127.0.0.1", STATSD_PORT=str(port))
    )
    assert result.status is Status.WARN and "nothing listens" in result.finding


@pytest.mark.parametrize("dsn", ["not a dsn", "https://o1.ingest.sentry.io/42", "ftp://k@h/1"])
def test_a_sentry_dsn_that_does_not_parse_fails(tmp_path: Path, dsn: str) -> None:
    result = telemetry.check_sentry(context(tmp_path, SENTRY_DSN=dsn))
    assert result.status is Status.FAIL and "does not parse" in result.finding


def test_a_sentry_dsn_that_parses_is_ok_and_sends_nothing(tmp_path: Path) -> None:
    result = telemetry.check_sentry(
        context(tmp_path, SENTRY_DSN="https://abc123@o1.ingest.sentry.io/42")
    )
    assert result.status is Status.OK
    assert result.details == {"project": "42", "host": "o1.ingest.sentry.io"}
    assert "abc123" not in result.finding


def test_disk_below_the_threshold_warns(tmp_path: Path) -> None:
    assert free_space(tmp_path, 1, what="x").status is Status.OK
    result = free_space(tmp_path / "not" / "yet", 10**12, what="x")
    assert result.status is Status.WARN and "not created yet" in result.finding
    assert result.details["path"] == str(tmp_path / "not" / "yet")


def test_the_table_escapes_outside_text_and_fits_80_columns(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(width=80, record=True, force_terminal=False)
    findings = [
        Finding(
            "database", Result(Status.FAIL, "x\x1b]0;pwned\x07 [bold]y[/]", "fix it " * 20), 0.1
        )
    ]
    render(findings, console=console)
    text = console.export_text()
    assert "\x1b" not in text and "\\x1b" in text and "[bold]y[/]" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_configuration_error_inside_a_check_is_that_checks_failure(tmp_path: Path) -> None:
    from ingestd.supervisor.doctor.embedder import check_embedder

    ctx = context(tmp_path, INGESTD_EMBEDDER="openai")  # and no OPENAI_API_KEY
    [found] = run_checks([NamedCheck("embedder", check_embedder)], ctx)
    assert found.result.status is Status.FAIL
    assert "needs OPENAI_API_KEY" in found.result.finding


def test_the_hash_embedder_warns(tmp_path: Path) -> None:
    from ingestd.supervisor.doctor.embedder import check_embedder

    result = check_embedder(context(tmp_path, INGESTD_EMBEDDER="hash"))
    assert result.status is Status.WARN and result.fix
