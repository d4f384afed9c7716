"""A real supervisor in a subprocess, fake (or real) workers forked by it, a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.supervisor.arbiter_support import FAST, HARNESS, ArbiterRun


@pytest.fixture
def start_arbiter(
    cli_env: dict[str, str], conn: psycopg.Connection[Any], tmp_path: Path
) -> Iterator[Callable[..., ArbiterRun]]:
    runs: list[ArbiterRun] = []
    conn.execute("DELETE FROM worker_status")
    conn.execute("DELETE FROM supervisor_status")

    def start(
        worker: str,
        *,
        drain: bool = False,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        http: str | None = None,
        **overrides: Any,
    ) -> ArbiterRun:
        spec = {
            "worker": worker,
            "http": http,
            "drain": drain,
            "config": str(config) if config else None,
            "overrides": {**FAST, **overrides},
        }
        output = tmp_path / f"arbiter-{len(runs)}.log"
        # With ``log_file`` set, the supervisor's log lines go there, not to its stderr.
        log_path = Path(overrides["log_file"]) if overrides.get("log_file") else output
        with output.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HARNESS), json.dumps(spec)],
                env={**cli_env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown can kill it all
            )
        run = ArbiterRun(proc, log_path, conn)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
