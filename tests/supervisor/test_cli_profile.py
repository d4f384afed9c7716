"""`ingestd profile` on a host without the optional memray extra says what to install."""

from __future__ import annotations

import sys

import pytest

from ingestd.supervisor.cli import main


def test_profile_without_memray_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "memray", None)  # import memray now raises ImportError
    assert main(["profile", "--slot", "0"]) == 2
    err = capsys.readouterr().err
    assert "memray" in err and "ingestd[profile]" in err
    assert "Traceback" not in err
