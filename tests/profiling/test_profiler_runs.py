"""The memory profiler itself still runs end to end: it calls the stages the way the
worker does, and a change of a stage's signature once broke it silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_sweep_completes_and_reports_every_stage(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    admin = db_url  # its server; the sweep makes (and drops) databases of its own
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "profiling.memory",
            "sweep",
            "--sizes",
            "100KB",
            "--pdf-pages",
            "--embedder",
            "hash",
            "--no-reports",
            "--database-url",
            admin,
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert set(row["stages"]) == {"parse", "chunk", "batch", "write"}
    assert row["worker"]["chunks"] > 0 and row["worker"]["peak_uss_mb"] > 0
