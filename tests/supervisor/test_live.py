"""``ingestd run``'s live view, without a daemon: the panel drawn from a snapshot, the
rates and ETA behind it, and when the view is wanted at all."""

from __future__ import annotations

import io
import os
import pty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from ingestd.supervisor.cli import build_parser
from ingestd.supervisor.live import (
    Failure,
    RateWindow,
    Snapshot,
    Totals,
    WorkerRow,
    _as_shown,
    eta_seconds,
    render,
    summary_line,
    wanted,
)

DOC = "3f2a9c1e-0000-4000-8000-000000000001"


def _totals(**overrides: object) -> Totals:
    values: dict[str, object] = {
        "counts": {"queued": 40, "embedding": 2, "complete": 120, "failed": 3},
        "runnable": 40,
        "chunks": 5000,
        "tokens": 900_000,
        "cost_usd": 0.125,
        "failures": (
            Failure(DOC, "evil\x1b[2J[bold]name.pdf", "invalid_input", "not valid UTF-8"),
            Failure(
                "9b8a7c6d-0000-4000-8000-000000000002",
                "a-very-long-file-name-that-cannot-fit-in-its-column.docx",
                "lease_expired",
                "unsupported MIME type 'application/octet-stream' " * 4,
            ),
        ),
    }
    values.update(overrides)
    return Totals(**values)  # type: ignore[arg-type]


def _snapshot(**overrides: object) -> Snapshot:
    rates = RateWindow()
    base = _totals(counts={"queued": 100, "complete": 60}, chunks=1000, tokens=100_000)
    rates.add(0.0, base)
    rates.add(10.0, _totals())
    values: dict[str, object] = {
        "title": "ingestd run --drain",
        "state": "running",
        "target": 2,
        "uptime_seconds": 3723.4,
        "workers": (
            WorkerRow(1, 40213, "embedding", DOC, 215 * 1024 * 1024),
            WorkerRow(0, 40212, None, None, None),
        ),
        "totals": _totals(),
        "baseline": base,
        "rates": rates.rates(),
    }
    values.update(overrides)
    return Snapshot(**values)  # type: ignore[arg-type]


def _text(renderable: object, width: int = 80) -> list[str]:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def test_the_panel_at_80_columns_says_what_the_run_is_doing() -> None:
    lines = _text(render(_snapshot()))
    text = "\n".join(lines)
    assert all(cell_len(line) <= 80 for line in lines), max(lines, key=cell_len)
    assert "ingestd run --drain" in lines[0]
    assert "workers 2/2" in text and "up 1:02:03" in text
    assert "queued 40" in text and "complete 120" in text and "failed 3" in text
    assert "dead" not in text.split("failed 3")[0]  # statuses without documents are left out
    # (5000 - 1000) chunks and 800,000 tokens over 10 s; 63 documents finished in them.
    assert "chunks/s 400" in text and "tokens/s 80,000" in text and "docs/s 6.3" in text
    assert "left 42" in text and "ETA 0:00:07" in text  # 42 left at 6.3/s
    assert "this run 63 docs, 4000 chunks" in text
    # Workers by slot, idle ones too, with a short document id and USS.
    worker_lines = [line for line in lines if "40212" in line or "40213" in line]
    assert "40212" in worker_lines[0] and "idle" in worker_lines[0]
    assert "embedding" in worker_lines[1] and "3f2a9c1e" in worker_lines[1]
    assert "215 MB" in worker_lines[1] and DOC not in text
    # Failures: short id, file name made inert (no escape, no markup), class, one line each.
    evil = next(line for line in lines if line.startswith("│ 3f2a9c1e"))
    assert "\x1b" not in text and "\\x1b" in evil and "invalid_input" in evil
    long = next(line for line in lines if "9b8a7c6d" in line)
    assert "…" in long and "lease_expired" in long


def test_a_database_error_is_shown_not_hidden() -> None:
    text = "\n".join(_text(render(_snapshot(database_error="OperationalError: gone"))))
    assert "database: OperationalError: gone" in text


def test_before_the_first_reading_nothing_is_made_up() -> None:
    text = "\n".join(
        _text(render(_snapshot(totals=None, baseline=None, rates=RateWindow().rates())))
    )
    assert "waiting for the first reading" in text
    assert "chunks/s -" in text and "ETA -" in text and "left -" in text


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(min_value=60, max_value=200),
    filename=st.text(min_size=0, max_size=120),
    reason=st.text(min_size=0, max_size=400),
    workers=st.integers(min_value=0, max_value=12),
    count=st.integers(min_value=0, max_value=10**9),
)
def test_no_line_is_wider_than_the_terminal(
    width: int, filename: str, reason: str, workers: int, count: int
) -> None:
    totals = _totals(
        counts={"queued": count, "parsing": count, "complete": count, "dead": count},
        runnable=count,
        failures=(Failure(DOC, filename, "invalid_input", reason),),
    )
    rows = tuple(WorkerRow(i, 4_000_000 + i, "finalizing", DOC, count) for i in range(workers))
    lines = _text(render(_snapshot(totals=totals, workers=rows, target=workers)), width)
    assert all(cell_len(line) <= width for line in lines)


def test_the_summary_fits_one_line() -> None:
    line = summary_line(_snapshot(state="stopped"), 0)
    assert line == "stopped after 1:02:03: 60 complete, 3 failed; 4000 chunks; $0.0000; exit 0"
    assert cell_len(line) <= 80
    idle = _snapshot(state="stopped", baseline=_totals())
    assert summary_line(idle, 1).startswith("stopped after 1:02:03: nothing finished; 0 chunks")


# -- rates and ETA ----------------------------------------------------------------------------


@given(
    per_second=st.floats(min_value=0, max_value=1e5, allow_nan=False),
    step=st.floats(min_value=0.1, max_value=5),
    samples=st.integers(min_value=2, max_value=80),
)
def test_a_steady_run_has_its_own_rate(per_second: float, step: float, samples: int) -> None:
    window = RateWindow(window=20.0)
    for i in range(samples):
        done = int(per_second * step * i)
        window.add(i * step, _totals(chunks=done, tokens=2 * done, counts={"complete": done}))
    rates = window.rates()
    span = min((samples - 1) * step, 20.0)  # at least the window, once it is full
    if (samples - 1) * step < 1.0:
        assert rates.chunks_per_second is None
        return
    assert rates.chunks_per_second is not None and rates.tokens_per_second is not None
    # Integer totals: the rate is off by at most one unit over the window's span.
    assert abs(rates.chunks_per_second - per_second) <= 1 / span + 1e-9 + per_second * 1e-9
    assert rates.tokens_per_second == pytest.approx(2 * rates.chunks_per_second)
    assert rates.documents_per_second == pytest.approx(rates.chunks_per_second)


def test_the_window_forgets_old_samples() -> None:
    window = RateWindow(window=10.0)
    window.add(0.0, _totals(chunks=0, counts={}))
    window.add(100.0, _totals(chunks=0, counts={}))  # a long idle stretch...
    window.add(105.0, _totals(chunks=500, counts={}))
    window.add(110.0, _totals(chunks=1000, counts={}))
    assert window.rates().chunks_per_second == pytest.approx(100.0)  # ...is not averaged in


def test_totals_going_down_start_the_window_again() -> None:
    window = RateWindow()
    window.add(0.0, _totals(chunks=1000))
    window.add(5.0, _totals(chunks=100))  # documents deleted or requeued for re-embedding
    assert window.rates().chunks_per_second is None
    window.add(7.0, _totals(chunks=300))
    assert window.rates().chunks_per_second == pytest.approx(100.0)


@given(
    remaining=st.integers(min_value=1, max_value=10**9),
    per_second=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
)
def test_eta_is_what_is_left_over_the_rate(remaining: int, per_second: float) -> None:
    eta = eta_seconds(remaining, per_second)
    assert eta is not None and eta * per_second == pytest.approx(remaining)


@pytest.mark.parametrize("per_second", [None, 0.0, -1.0])
def test_no_eta_without_a_rate(per_second: float | None) -> None:
    assert eta_seconds(10, per_second) is None
    assert eta_seconds(0, per_second) == 0.0  # nothing left: done, whatever the rate


# -- when the view is shown ---------------------------------------------------------------------


@pytest.fixture
def terminal() -> object:
    master, slave = pty.openpty()
    stream = open(slave, "w", closefd=True)  # noqa: SIM115
    yield stream
    stream.close()
    os.close(master)


def test_wanted_on_a_terminal_with_console_logs(terminal, monkeypatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert wanted(no_live=False, log_json=None, stream=terminal)
    assert wanted(no_live=False, log_json=False, stream=terminal)


def test_not_wanted_with_no_live_or_json_logs(terminal, monkeypatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert not wanted(no_live=True, log_json=None, stream=terminal)
    assert not wanted(no_live=False, log_json=True, stream=terminal)


def test_not_wanted_off_a_terminal_or_on_a_dumb_one(terminal, monkeypatch) -> None:
    assert not wanted(no_live=False, log_json=None, stream=io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(no_live=False, log_json=None, stream=terminal)


def test_run_takes_no_live() -> None:
    assert build_parser().parse_args(["run", "--drain", "--no-live"]).no_live is True
    assert build_parser().parse_args(["run"]).no_live is False


def test_a_child_line_is_shown_as_the_terminal_would_leave_it() -> None:
    assert _as_shown(b"Loading weights 1/3\rLoading weights 3/3\r") == "Loading weights 3/3"
    assert _as_shown("caf\u00e9 \xff".encode("latin-1")) == "caf\ufffd \ufffd"
