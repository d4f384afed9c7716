"""``ingestd status`` and ``ingestd show`` at 80 columns: nothing cut, columns dropped by
priority; ``--wide`` shows every column."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console

from ingestd.shared.states import Status
from ingestd.supervisor import cli
from ingestd.supervisor import status as status_module
from ingestd.supervisor.status import render_document, render_status

SUPERVISOR = "ingest-prod-01:4242"
WORKER_COLUMNS = (
    "slot",
    "stage",
    "document",
    "heartbeat s",
    "done",
    "supervisor",
    "USS MB",
    "pid",
    "uptime s",
    "owner",
)
TIMELINE_COLUMNS = ("at", "event", "from → to", "try", "worker", "stage", "error / details")
DOC_IDS = [
    "5f0c2a9e-7d1b-4c53-9a0e-2b6f1e8d4c71",
    "9b1d3c5e-2f4a-4b6c-8d0e-1f2a3b4c5d6e",
    "c4e6a8b0-d2f4-4618-9a3c-5e7f9a1b3c5d",
]


def _status(supervisor: str = SUPERVISOR, stage: str = "embedding") -> dict[str, Any]:
    counts = {str(s): 0 for s in Status}
    counts.update(
        queued=1204, parsing=2, awaiting_parse=3, embedding=3, complete=98213, failed=17, dead=2
    )
    workers = [
        {
            "supervisor": supervisor,
            "slot": slot,
            "pid": 40001 + slot,
            "owner": f"{supervisor}:{slot}:3",
            "uss_bytes": 187 * 2**20,
            "document_id": DOC_IDS[slot] if slot < 3 else None,
            "stage": stage if slot < 3 else None,
            "documents_done": 1234 + slot,
            "heartbeat_age_seconds": 0.4,
            "uptime_seconds": 86412.5,
        }
        for slot in range(4)
    ]
    return {
        "documents": counts,
        "queue": {
            "runnable": 1207,
            "leased": 3,
            "oldest_runnable_age_seconds": 8123.4,
            "embed_tokens": 912345678,
            "cost_usd": 18.2469,
        },
        "throughput": {
            "completed_last_1m": 112,
            "completed_last_5m": 540,
            "completed_last_15m": 1620,
        },
        "workers": workers,
        "supervisors": [
            {
                "supervisor": supervisor,
                "pid": 4242,
                "hostname": "ingest-prod-01",
                "state": "running",
                "started_at": datetime(2026, 12, 1, 7, 0, tzinfo=UTC),
                "updated_at": datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
                "details": {"workers_alive": 4, "workers_target": 4},
            }
        ],
        "breakers": {supervisor: {"openai": "half_open", "llamaparse": "closed"}},
    }


T0 = datetime(2026, 12, 2, 23, 59, 58, 123000, tzinfo=UTC)
WORKER_A = f"{SUPERVISOR}:2:3"
WORKER_B = f"{SUPERVISOR}:0:3"
RATE_LIMITED = "OpenAI answered 429 Too Many Requests; retrying in 4.0s (Retry-After)"


def _event(
    seconds: float,
    event: str,
    stage: str | None,
    from_status: str | None,
    to_status: str,
    attempt: int,
    worker: str | None = WORKER_A,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "at": T0 + timedelta(seconds=seconds),
        "event": event,
        "stage": stage,
        "from_status": from_status,
        "to_status": to_status,
        "attempt": attempt,
        "worker": worker,
        "error_class": extra.get("error_class"),
        "message": extra.get("message"),
        "details": extra.get("details"),
    }


# A document that crosses midnight, is rate limited once and completes on its second attempt.
HISTORY = [
    _event(0, "ingested", None, None, "queued", 0, worker=None, details={"source": "cli"}),
    _event(0.5, "claimed", "parsing", "queued", "parsing", 1),
    _event(1.2, "stage_finished", "parsing", "parsing", "parsed", 1, details={"chars": 48213}),
    _event(1.2, "stage_started", "chunking", "parsed", "chunking", 1),
    _event(1.4, "stage_finished", "chunking", "chunking", "chunked", 1, details={"chunks": 57}),
    _event(1.4, "stage_started", "embedding", "chunked", "embedding", 1),
    _event(
        3.0,
        "failed",
        "embedding",
        "embedding",
        "chunked",
        1,
        error_class="rate_limited",
        message=RATE_LIMITED,
    ),
    _event(7.1, "claimed", "embedding", "chunked", "embedding", 2, worker=WORKER_B),
    _event(9.9, "stage_finished", "embedding", "embedding", "embedded", 2, worker=WORKER_B),
    _event(9.9, "stage_started", "finalizing", "embedded", "finalizing", 2, worker=WORKER_B),
    _event(10.0, "stage_finished", "finalizing", "finalizing", "complete", 2, worker=WORKER_B),
]

DOC = {
    "id": uuid.UUID(DOC_IDS[0]),
    "filename": "annual-report-2025 (final, signed).pdf",
    "mime_type": "application/pdf",
    "size_bytes": 4823112,
    "status": "complete",
    "attempts": 2,
    "correlation_id": uuid.UUID("0b7e4f6a-1c2d-4e8f-9a0b-3c4d5e6f7a8b"),
    "error_class": None,
    "error_message": None,
    "chunks_embedded": 57,
    "chunks_total": 57,
    "tokens_total": 28123,
    "embed_tokens": 28123,
    "cost_usd": Decimal("0.000562"),
}


def _console(width: int) -> Console:
    return Console(width=width, file=io.StringIO(), force_terminal=False)


def _text(console: Console) -> str:
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def _status_text(width: int, *, wide: bool = False, **kw: Any) -> str:
    console = _console(width)
    render_status(_status(**kw), wide=wide, console=console)
    return _text(console)


def _show_text(width: int, *, wide: bool = False, history: list[dict[str, Any]] = HISTORY) -> str:
    console = _console(width)
    render_document(DOC, history, wide=wide, console=console)
    return _text(console)


def _header_line(out: str, first: str) -> str:
    """The header row of the table whose first column is ``first``."""
    return next(
        line for line in out.splitlines() if re.match(rf"\s*{re.escape(first)}\s{{2}}", line)
    )


def _fits(out: str, width: int) -> None:
    assert "…" not in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width


@pytest.mark.parametrize("width", [80, 100])
def test_status_cuts_nothing_and_names_every_status_whole(width: int) -> None:
    out = _status_text(width)
    _fits(out, width)
    counts = _status()["documents"]
    for name, n in counts.items():
        assert re.search(rf"^ {name} +{n} ", out, flags=re.MULTILINE), name
    assert re.search(r"^ total +99444 ", out, flags=re.MULTILINE)
    for figure in ("1207", "8123.4s", "112/540/1620", "912345678", "$18.2469"):
        assert figure in out
    assert "openai half_open" in out and "llamaparse" not in out  # closed breakers: not news
    for line in out.splitlines():
        if re.match(r"\s+[0-2]\s{3}embedding ", line):
            assert SUPERVISOR in line  # the worker rows keep the supervisor whole at 80


def test_status_at_80_columns_drops_the_least_important_worker_columns() -> None:
    header = _header_line(_status_text(80), "slot").split("  ")
    shown = [h.strip() for h in header if h.strip()]
    assert shown == list(WORKER_COLUMNS[: len(shown)])  # a prefix, in priority order
    assert {"slot", "stage", "document", "heartbeat s", "done"} <= set(shown)
    assert "owner" not in shown


@pytest.mark.parametrize("width", [60, 80])
def test_status_wide_shows_every_column_whole(width: int) -> None:
    out = _status_text(width, wide=True)
    assert "…" not in out
    header = _header_line(out, "slot")
    for column in WORKER_COLUMNS:
        assert re.search(rf"(^|\s){re.escape(column)}(\s|$)", header), column
    for doc_id in DOC_IDS:
        assert doc_id in out  # the whole id, not the 8-character prefix
    for slot in range(4):
        assert f"{SUPERVISOR}:{slot}:3" in out
    for column in ("host", "pid", "started"):
        assert column in _header_line(out, "supervisor")


@pytest.mark.parametrize("width", [80, 100])
def test_show_cuts_no_event_status_or_time(width: int) -> None:
    out = _show_text(width)
    _fits(out, width)
    for ev in HISTORY:
        arrow = f"{ev['from_status'] or ''} → {ev['to_status']}".strip()
        assert re.search(rf"\s{ev['event']}\s+{re.escape(arrow)}(\s|$)", out), arrow
        assert f"{ev['at']:%H:%M:%S}.{ev['at'].microsecond // 1000:03d}" in out
    assert "rate_limited:" in out and "429" in out
    assert "took 2.800s" in out  # embedding: claimed at 7.1, finished at 9.9


def test_show_gives_each_date_once() -> None:
    out = _show_text(80)
    assert out.count("2026-12-02") == 1 and "timeline 2026-12-02 (UTC)" in out
    assert out.count("2026-12-03") == 1  # before the first event after midnight
    assert re.search(r"^2026-12-03 .*\n00:00:01\.123 ", out, flags=re.MULTILINE)


def test_show_at_80_columns_drops_worker_and_stage_first() -> None:
    header = _header_line(_show_text(80), "at")
    assert "error / details" in header and "from → to" in header and "event" in header
    assert "worker" not in header and "stage" not in header


def test_show_wide_shows_every_column() -> None:
    out = _show_text(80, wide=True)
    assert "…" not in out
    header = _header_line(out, "at")
    for column in TIMELINE_COLUMNS:
        assert column in header
    assert WORKER_A in out and WORKER_B in out
    assert RATE_LIMITED in out  # on one line: nothing wrapped


def test_long_message_wraps_without_dropping_other_columns() -> None:
    message = "x" * 200 + " and then some words"
    history = [
        _event(
            0,
            "failed",
            "parsing",
            "parsing",
            "failed",
            1,
            error_class="invalid_input",
            message=message,
        )
    ]
    out = _show_text(80, history=history)
    _fits(out, 80)
    header = _header_line(out, "at")
    assert "event" in header and "from → to" in header and "try" in header
    assert re.search(r"\sfailed\s+parsing → failed\s+1\s+invalid_input:", out)
    assert "".join(re.findall(r"x+", out)) == "x" * 200  # folded across lines, not cut


HOSTILE = "esc\x1b]0;PWNED-TITLE\x07\x1b[2J[bold red]loud[/]\x9b"


@pytest.mark.parametrize("wide", [False, True])
def test_status_shows_hostile_names_inert(wide: bool) -> None:
    out = _status_text(80, wide=wide, supervisor=HOSTILE, stage=HOSTILE)
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "esc\\x1b]0;PWNED-TITLE\\x07" in out
    assert "[bold red]loud[/]" in out  # shown as typed, not taken as markup


def test_show_shows_hostile_worker_and_details_inert() -> None:
    history = [
        _event(0, "claimed", "parsing", "queued", "parsing", 1, worker=HOSTILE),
        _event(1, "stage_finished", "parsing", "parsing", "parsed", 1, details={HOSTILE: 1}),
    ]
    for wide in (False, True):
        out = _show_text(80, wide=wide, history=history)
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "red]loud[/]" in out  # shown as typed (wrapped at 80), not taken as markup


def test_status_with_columns_80_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    render_status(_status())
    _fits(capsys.readouterr().out, 80)


def test_cli_passes_wide_to_status_and_show(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ingestd.shared.db import reports

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(cli, "_db", lambda *_a, **_k: object())
    monkeypatch.setattr(status_module, "gather_status", lambda _conn: _status())
    monkeypatch.setattr(reports, "find_document_id", lambda _conn, _ref: DOC["id"])
    monkeypatch.setattr(reports, "document", lambda _conn, _id: DOC)
    monkeypatch.setattr(reports, "events", lambda _conn, _id: HISTORY)

    assert cli.main(["status"]) == 0
    assert "owner" not in capsys.readouterr().out
    assert cli.main(["status", "--wide"]) == 0
    assert "owner" in _header_line(capsys.readouterr().out, "slot")
    assert cli.main(["show", "5f0c2a9e"]) == 0
    assert "worker" not in _header_line(capsys.readouterr().out, "at")
    assert cli.main(["show", "5f0c2a9e", "--wide"]) == 0
    assert "worker" in _header_line(capsys.readouterr().out, "at")


def test_status_without_supervisors_or_workers_says_so() -> None:
    status = {**_status(), "workers": [], "supervisors": [], "breakers": {}}
    console = _console(80)
    render_status(status, console=console)
    out = _text(console)
    assert "supervisors: none has published its status" in out
    assert "workers: none running" in out
    assert "heartbeat s" not in out  # no table of headers without rows
