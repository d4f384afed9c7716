"""``ingestd profile`` on a host without the optional memray extra: a clear error that
names the extra, and the work goes on unrecorded (workers/recording.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ingestd.workers.recording import memray_recording


def test_without_memray_the_request_fails_clearly_and_the_work_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "memray", None)  # as if not installed
    ran = False
    with capture_logs() as logs, memray_recording(tmp_path / "p.bin") as recording:
        ran = True
    assert ran and recording is False
    assert not (tmp_path / "p.bin").exists()
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert "profile request failed" in error["event"]
    assert "pip install 'ingestd[profile]'" in error["event"]
    assert error["path"] == str(tmp_path / "p.bin")


def test_with_memray_the_work_inside_is_recorded(tmp_path: Path) -> None:
    pytest.importorskip("memray")
    path = tmp_path / "profiles" / "p.bin"
    with capture_logs() as logs, memray_recording(path) as recording:
        kept = [bytes(1024) for _ in range(64)]
    assert recording is True and kept
    assert path.stat().st_size > 0
    assert [e["event"] for e in logs] == ["memray recording started", "memray recording finished"]
