"""``ingestd token create / list / revoke`` as a real subprocess against the test database,
and the token it prints used against the HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from ingestd.supervisor.tokens import parse_expiry, split
from tests.supervisor.http.http_harness import multipart, request


def _ingestd(cli_env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingestd.supervisor.cli", "token", *args],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _columns_as_text(db) -> str:
    rows = db.execute("SELECT * FROM api_tokens").fetchall()
    return " ".join(str(v) + (bytes(v).hex() if isinstance(v, bytes | memoryview) else "")
                    for row in rows for v in row.values())  # fmt: skip


def test_create_list_revoke(cli_env, server, db) -> None:
    made = _ingestd(cli_env, "create", "--name", "ci-uploader", "--scope", "write")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert made.stdout == token + "\n"  # alone on stdout, for TOKEN=$(ingestd token create ...)
    assert token.startswith("ingestd_") and split(token) is not None
    assert "shown only this once" in made.stderr and token not in made.stderr
    # Only a hash is stored: the secret is in no column, in no encoding.
    secret = split(token)[1]  # type: ignore[index]
    stored = _columns_as_text(db)
    assert "ci-uploader" in stored and secret not in stored and token not in stored

    body, headers = multipart(b"uploaded with the printed token", "c.txt")
    reply = request("POST", server.url + "/v1/documents", data=body, headers=headers, token=token)
    assert reply.status == 201, reply.body

    record = _ingestd(cli_env, "create", "--name", "reader", "--expires", "30d", "--json")
    assert record.returncode == 0, record.stderr
    full = json.loads(record.stdout)
    assert full["scope"] == "read" and full["token"].startswith("ingestd_")
    assert "secret_sha256" not in full

    listed = _ingestd(cli_env, "list", "--json")
    assert listed.returncode == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["name"] for r in rows} >= {"ci-uploader", "reader", "harness-admin"}
    assert token not in listed.stdout and secret not in listed.stdout
    assert "secret" not in listed.stdout
    table = _ingestd(cli_env, "list")
    assert "ci-uploader" in table.stdout and secret not in table.stdout

    twice = _ingestd(cli_env, "create", "--name", "ci-uploader")
    assert twice.returncode == 2 and "already named" in twice.stderr
    assert "Traceback" not in twice.stderr

    gone = _ingestd(cli_env, "revoke", "ci-uploader")
    assert gone.returncode == 0 and "revoked" in gone.stdout
    assert request("GET", server.url + "/v1/status", token=token).status == 401
    again = _ingestd(cli_env, "revoke", "ci-uploader")
    assert again.returncode == 1 and "no live token" in again.stderr
    # A revoked token's name can name a new one; revoking by id works too.
    renewed = _ingestd(cli_env, "create", "--name", "ci-uploader", "--json")
    new_id = json.loads(renewed.stdout)["id"]
    assert _ingestd(cli_env, "revoke", new_id).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("create", "--name", "bad name"),
        ("create", "--name", "x", "--scope", "root"),
        ("create", "--name", "x", "--expires", "yesterday"),
        ("create", "--name", "x", "--expires", "2001-01-01"),
        ("create",),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli_env, db, args) -> None:
    result = _ingestd(cli_env, *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert db.execute("SELECT count(*) AS n FROM api_tokens").fetchone()["n"] == 1  # harness's


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now=now) == now + timedelta(days=30)
    assert parse_expiry("12h", now=now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now=now) == now + timedelta(weeks=2)
    end = parse_expiry("2026-12-31", now=now)
    assert (end.date().isoformat(), end.tzinfo) == ("2026-12-31", UTC)
    for bad in ("0d", "soon", "2025-12-31", "-3d"):
        with pytest.raises(ValueError):
            parse_expiry(bad, now=now)
