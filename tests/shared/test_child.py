"""``run_child``, the start-up both supervised children share, in real forked processes:
exit codes, the heartbeat channel, secrets masked in its log, SIGHUP handled."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingestd.shared.channel import ChannelReader
from ingestd.shared.child import Role, Started, run_child
from ingestd.shared.errors import ConfigError
from ingestd.shared.exitcodes import EXIT_CONFIG, EXIT_CRASH, EXIT_OK
from ingestd.shared.settings import Settings, load_settings
from ingestd.shared.telemetry.logs import get_logger
from ingestd.shared.telemetry.scrub import (
    REDACTED,
    clear_secrets,
    register_settings_secrets,
    registered_secrets,
)

OPENAI_KEY = "sk-child-test-0123456789"
LLAMA_KEY = "llx-child-test-0123456789"
WEBHOOK_SECRET = "whsec-child-test-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env = {
        "INGESTD_HOME": str(tmp_path / "home"),
        "INGESTD_DATABASE_URL": "postgresql:///never-connected",
        "INGESTD_EMBEDDER": "hash",
    }
    return load_settings(
        environ=env,
        log_file=tmp_path / "child.log",
        log_json=True,
        openai_api_key=OPENAI_KEY,
    )


class Ran:
    def __init__(self, code: int, messages: list[dict[str, Any]], stderr: str, log: str) -> None:
        self.code, self.messages, self.stderr = code, messages, stderr
        self.log = [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def run(settings: Settings, role: Role, body: Callable[[Started], int], tmp: Path) -> Ran:
    err_path = tmp / "stderr.txt"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            sys.stderr = open(err_path, "w")  # noqa: SIM115 - left open: os._exit ends it
            run_child(role, settings, write_fd, body)
        finally:
            os._exit(99)  # run_child returned or raised: the test fails on this code
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    messages, _ = ChannelReader(read_fd).read()
    os.close(read_fd)
    log_file = settings.log_file
    assert log_file is not None
    return Ran(
        os.waitstatus_to_exitcode(status),
        messages,
        err_path.read_text() if err_path.exists() else "",
        log_file.read_text() if log_file.exists() else "",
    )


def test_the_body_gets_the_channel_and_its_return_value_is_the_exit_code(
    settings: Settings, tmp_path: Path
) -> None:
    def body(started: Started) -> int:
        started.channel.documents_done = 7
        started.channel.beat(force=True)
        return 5

    ran = run(settings, Role("worker", 3, tune_malloc=True), body, tmp_path)

    assert ran.code == 5
    assert [m["docs"] for m in ran.messages] == [7]


def test_a_configuration_error_exits_78_and_says_so_on_stderr(
    settings: Settings, tmp_path: Path
) -> None:
    def body(_: Started) -> int:
        raise ConfigError("bad knob")

    ran = run(settings, Role("worker", 3), body, tmp_path)

    assert ran.code == EXIT_CONFIG
    assert "ingestd worker 3: configuration error: bad knob" in ran.stderr


@pytest.mark.parametrize(
    ("role", "event"), [(Role("worker", 1), "worker crashed"), (Role("http"), "http child crashed")]
)
def test_an_unexpected_exception_is_logged_and_exits_70(
    settings: Settings, tmp_path: Path, role: Role, event: str
) -> None:
    def body(_: Started) -> int:
        raise RuntimeError("boom")

    ran = run(settings, role, body, tmp_path)

    assert ran.code == EXIT_CRASH
    crashed = [r for r in ran.log if r.get("event") == event]
    assert crashed and crashed[0]["role"] == role.name


def test_the_configurations_secrets_are_masked_in_the_childs_log(
    settings: Settings, tmp_path: Path
) -> None:
    def body(_: Started) -> int:
        get_logger("ingestd.worker").info("calling out", detail=f"with key {OPENAI_KEY}")
        return EXIT_OK

    ran = run(settings, Role("worker", 0), body, tmp_path)

    assert ran.code == EXIT_OK
    [line] = [r for r in ran.log if r.get("event") == "calling out"]
    assert line["detail"] == f"with key {REDACTED}"


def test_sighup_reopens_the_log_instead_of_ending_the_child(
    settings: Settings, tmp_path: Path
) -> None:
    def body(_: Started) -> int:
        # SIGHUP's default action would end the process with that signal.
        signal.raise_signal(signal.SIGHUP)
        return EXIT_OK

    assert run(settings, Role("http"), body, tmp_path).code == EXIT_OK


def test_register_settings_secrets_registers_every_secret_the_settings_hold(
    settings: Settings,
) -> None:
    full = settings.model_copy(
        update={
            "llama_cloud_api_key": type(settings.openai_api_key)(LLAMA_KEY),
            "webhook_secret": type(settings.openai_api_key)(WEBHOOK_SECRET),
        }
    )
    clear_secrets()
    try:
        register_settings_secrets(full)
        assert registered_secrets() == {OPENAI_KEY, LLAMA_KEY, WEBHOOK_SECRET}
    finally:
        clear_secrets()
