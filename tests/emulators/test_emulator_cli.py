"""``emulator openai|llamaparse``: argument handling, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.emulators import (
    LlamaParseEmulator,
    LlamaParseFault,
    OpenAIEmulator,
    OpenAIFault,
)
from tests.emulators.cli import build, main

from .conftest import http

ROOT = Path(__file__).resolve().parents[2]


def test_openai_subcommand_serves_until_sigterm() -> None:
    code = "from tests.emulators.cli import main; raise SystemExit(main())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "openai", "--rpm", "100", "--api-key", "sk-cli"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        reply = http(
            "POST",
            url + "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64"},
            {"Authorization": "Bearer sk-cli"},
        )
        assert reply.status == 200
        assert reply.headers["x-ratelimit-limit-requests"] == "100"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_arguments_become_config() -> None:
    oa = build(
        [
            "openai",
            "--tpm",
            "5000",
            "--latency",
            "0.1",
            "--fault-rate-503",
            "0.2",
            "--fault-rate-drop",
            "0.1",
            "--estimate-usage",
            "--seed",
            "4",
        ]
    )
    assert isinstance(oa, OpenAIEmulator)
    assert oa.config.tpm == 5000 and oa.config.rpm is None
    assert oa.config.latency == 0.1 and oa.config.seed == 4
    assert oa.config.fault_rates == {OpenAIFault.UNAVAILABLE: 0.2, OpenAIFault.DROP: 0.1}
    assert oa.config.exact_usage is False
    assert oa.config.api_key == "sk-emulator-key"

    lp = build(
        [
            "llamaparse",
            "--delay",
            "0.5",
            "--upload-limit",
            "0",
            "--any-key",
            "--fault-rate-402",
            "0.3",
            "--credits",
            "10",
            "--port",
            "0",
        ]
    )
    assert isinstance(lp, LlamaParseEmulator)
    assert lp.config.processing_delay == 0.5
    assert lp.config.upload_limit is None
    assert lp.config.api_key is None
    assert lp.config.credits == 10
    assert lp.config.fault_rates == {LlamaParseFault.OUT_OF_CREDITS: 0.3}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["openai", "--fault-rate-503", "1.5"],
        ["openai", "--fault-rate-500", "0.6", "--fault-rate-503", "0.6"],
        ["llamaparse", "--delay", "-1"],
        ["openai", "--rpm", "0"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["llamaparse", "--port", str(port)]) == 1
    assert "cannot serve" in capsys.readouterr().err
